package stdio

import (
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
)

// outputKind is where a process's stdout and stderr go.
type outputKind int

const (
	// toPaths: stdout and stderr are paths (containerd's fifos, or files)
	// given to the container as they are.
	toPaths outputKind = iota
	// toBinary: a logging process the shim starts reads both streams
	// (binary:// and binary-v2://).
	toBinary
	// toFile: the shim appends both streams to one file (file://).
	toFile
)

// output is a parsed stdout destination.
type output struct {
	kind outputKind
	// path is the logging binary or the log file.
	path string
	// args are the logging binary's arguments, from the URI's query.
	args []string
	// strictReady is binary-v2: the logger must write a byte to say it is
	// ready; closing the pipe without one means it failed.
	strictReady bool
}

// ValidateStdio checks a process's stream names as containerd sends them,
// before anything is opened or forked: stdin is a path; stdout is a path or
// a log URI (binary://, binary-v2://, file://), and with a URI, stderr is
// the same URI or empty, as containerd's cio.LogURI sends them.
func ValidateStdio(s Stdio) error {
	_, err := parseStdio(s)
	return err
}

func parseStdio(s Stdio) (output, error) {
	if err := checkPath("stdin", s.Stdin); err != nil {
		return output{}, err
	}
	if !strings.Contains(s.Stdout, "://") {
		if err := checkPath("stdout", s.Stdout); err != nil {
			return output{}, err
		}
		if err := checkPath("stderr", s.Stderr); err != nil {
			return output{}, err
		}
		return output{kind: toPaths}, nil
	}
	if s.Stderr != "" && s.Stderr != s.Stdout {
		return output{}, fmt.Errorf("stderr %q with stdout log URI %q: a log URI takes both streams: %w", s.Stderr, s.Stdout, errdefs.ErrInvalidArgument)
	}
	return parseLogURI(s.Stdout)
}

// checkPath rejects URIs and relative paths, which would resolve against
// the shim's working directory.
func checkPath(stream, name string) error {
	switch {
	case name == "":
		return nil
	case strings.Contains(name, "://"):
		return fmt.Errorf("%s %q: a log URI is accepted for stdout only: %w", stream, name, errdefs.ErrInvalidArgument)
	case !strings.HasPrefix(name, "/"):
		return fmt.Errorf("%s path %q is not absolute: %w", stream, name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// parseLogURI reads a log URI the way containerd's cio.LogURIGenerator
// writes it: scheme://<absolute path>[?key=value&...], no host.
func parseLogURI(raw string) (output, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return output{}, fmt.Errorf("stdout log URI %q: %v: %w", raw, err, errdefs.ErrInvalidArgument)
	}
	var out output
	switch u.Scheme {
	case "binary":
		out.kind = toBinary
	case "binary-v2":
		out.kind, out.strictReady = toBinary, true
	case "file":
		out.kind = toFile
	default:
		return output{}, fmt.Errorf("stdout log URI %q: unknown scheme %q (want binary, binary-v2 or file): %w", raw, u.Scheme, errdefs.ErrInvalidArgument)
	}
	if u.Host != "" || u.User != nil {
		return output{}, fmt.Errorf("stdout log URI %q: has a host; write %s:///absolute/path: %w", raw, u.Scheme, errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(u.Path) || filepath.Clean(u.Path) != u.Path {
		return output{}, fmt.Errorf("stdout log URI %q: path %q is not clean and absolute: %w", raw, u.Path, errdefs.ErrInvalidArgument)
	}
	out.path = u.Path
	if out.kind == toBinary {
		out.args = loggerArgs(u.Query())
	}
	return out, nil
}

// loggerArgs turns the URI's query into the logging binary's arguments,
// "key value" per pair as containerd's shims pass them (a key without a
// value gets an empty argument after it). They walk the query map in Go's
// random order; sorting the keys gives the logger one order.
func loggerArgs(q url.Values) []string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var args []string
	for _, k := range keys {
		args = append(args, k)
		if v := q[k]; len(v) > 0 {
			args = append(args, v[0])
		}
	}
	return args
}
