package service

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"google.golang.org/protobuf/proto"
)

// criOptionsType is the type URL of the options containerd's CRI plugin
// sends every runtime whose runtime_type is not io.containerd.runc.v2: the
// runtime table's options section as TOML (ConfigBody), or the path of a
// file holding it (ConfigPath).
const criOptionsType = "runtimeoptions.v1.Options"

// decodeCRIOptions reads runc's option names (BinaryName, SystemdCgroup,
// ...) from the TOML that CRI passes on. containerd 1.6 sends an empty
// body: the shim's defaults apply.
func decodeCRIOptions(value []byte) (ociruntime.Options, error) {
	var o runtimeoptions.Options
	if err := proto.Unmarshal(value, &o); err != nil {
		return ociruntime.Options{}, fmt.Errorf("decode CRI runtime options: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	body := o.ConfigBody
	if len(body) == 0 && o.ConfigPath != "" {
		data, err := os.ReadFile(o.ConfigPath)
		if errors.Is(err, os.ErrNotExist) {
			return ociruntime.Options{}, fmt.Errorf("runtime options ConfigPath %q: %w", o.ConfigPath, errdefs.ErrNotFound)
		}
		if err != nil {
			return ociruntime.Options{}, fmt.Errorf("runtime options ConfigPath %q: %v: %w", o.ConfigPath, err, errdefs.ErrInvalidArgument)
		}
		body = data
	}
	values, err := parseFlatTOML(string(body))
	if err != nil {
		return ociruntime.Options{}, fmt.Errorf("runtime options: %w", err)
	}
	return optionsFromTOML(values)
}

// optionsFromTOML maps option names to RuntimeOptions. Names match as
// containerd's TOML decoder matches them, without regard to case, and
// snake_case is accepted too; names the shim does not know (ConfigPath,
// another runtime's) are ignored, as the runc shim ignores them.
func optionsFromTOML(values map[string]any) (ociruntime.Options, error) {
	var o ociruntime.Options
	str := map[string]*string{
		"binaryname": &o.BinaryName, "root": &o.Root, "shimcgroup": &o.ShimCgroup,
		"criuimagepath": &o.CriuImagePath, "criuworkpath": &o.CriuWorkPath,
	}
	boolean := map[string]*bool{"systemdcgroup": &o.SystemdCgroup, "nopivotroot": &o.NoPivotRoot, "nonewkeyring": &o.NoNewKeyring}
	ids := map[string]*uint32{"iouid": &o.IoUID, "iogid": &o.IoGID}
	for key, v := range values {
		name := strings.ToLower(strings.ReplaceAll(key, "_", ""))
		var ok bool
		switch {
		case str[name] != nil:
			*str[name], ok = v.(string)
		case boolean[name] != nil:
			*boolean[name], ok = v.(bool)
		case ids[name] != nil:
			var n int64
			if n, ok = v.(int64); ok && (n < 0 || n > 1<<32-1) {
				return o, fmt.Errorf("%s = %d is not a uid or gid: %w", key, n, errdefs.ErrInvalidArgument)
			}
			*ids[name] = uint32(n)
		default:
			continue
		}
		if !ok {
			return o, fmt.Errorf("%s has a value of type %T: %w", key, v, errdefs.ErrInvalidArgument)
		}
	}
	return o, nil
}

// parseFlatTOML reads `key = value` lines with string, boolean and integer
// values: the shape of a runtime's options section, which is all CRI
// sends. Tables, arrays and the rest of TOML are refused, not guessed at.
func parseFlatTOML(doc string) (map[string]any, error) {
	values := map[string]any{}
	for n, line := range strings.Split(doc, "\n") {
		fail := func(why string) error {
			return fmt.Errorf("TOML line %d %q: %s: %w", n+1, line, why, errdefs.ErrInvalidArgument)
		}
		s := strings.TrimSpace(line)
		if s == "" || s[0] == '#' {
			continue
		}
		if s[0] == '[' {
			return nil, fail("tables are not supported in runtime options")
		}
		key, rest, ok := cutKey(s)
		if !ok {
			return nil, fail("want key = value")
		}
		v, rest, err := tomlValue(strings.TrimSpace(rest))
		if err != nil {
			return nil, fail(err.Error())
		}
		if rest = strings.TrimSpace(rest); rest != "" && rest[0] != '#' {
			return nil, fail("text after the value")
		}
		if _, dup := values[key]; dup {
			return nil, fail("key given twice")
		}
		values[key] = v
	}
	return values, nil
}

// cutKey splits `key = rest` for a bare or quoted key.
func cutKey(s string) (key, rest string, ok bool) {
	if s[0] == '"' || s[0] == '\'' {
		v, after, err := tomlString(s)
		if err != nil {
			return "", "", false
		}
		key, s = v, strings.TrimSpace(after)
	} else {
		i := strings.IndexFunc(s, func(r rune) bool {
			return !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
		})
		if i <= 0 {
			return "", "", false
		}
		key, s = s[:i], strings.TrimSpace(s[i:])
	}
	if !strings.HasPrefix(s, "=") {
		return "", "", false
	}
	return key, s[1:], true
}

// tomlValue reads one string, boolean or integer from the start of s.
func tomlValue(s string) (any, string, error) {
	switch {
	case s == "":
		return nil, "", errors.New("no value")
	case s[0] == '"' || s[0] == '\'':
		return tomlString(s)
	case strings.HasPrefix(s, "true"):
		return true, s[4:], nil
	case strings.HasPrefix(s, "false"):
		return false, s[5:], nil
	}
	end := strings.IndexAny(s, " \t#")
	if end < 0 {
		end = len(s)
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(s[:end], "_", ""), 10, 64)
	if err != nil {
		return nil, "", fmt.Errorf("value %q is not a string, boolean or decimal integer", s[:end])
	}
	return n, s[end:], nil
}

// tomlString reads a literal ('...') or basic ("..." with escapes) string.
func tomlString(s string) (string, string, error) {
	if s[0] == '\'' {
		end := strings.IndexByte(s[1:], '\'')
		if end < 0 {
			return "", "", errors.New("unterminated string")
		}
		return s[1 : end+1], s[end+2:], nil
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), s[i+1:], nil
		case '\\':
			if i+1 >= len(s) {
				return "", "", errors.New("unterminated escape")
			}
			i++
			switch e := s[i]; e {
			case '"', '\\':
				b.WriteByte(e)
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'u', 'U':
				size := 4
				if e == 'U' {
					size = 8
				}
				if i+size >= len(s) {
					return "", "", errors.New("short unicode escape")
				}
				r, err := strconv.ParseUint(s[i+1:i+1+size], 16, 32)
				if err != nil || !utf8.ValidRune(rune(r)) {
					return "", "", errors.New("bad unicode escape")
				}
				b.WriteRune(rune(r))
				i += size
			default:
				return "", "", fmt.Errorf("unknown escape \\%c", e)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", "", errors.New("unterminated string")
}
