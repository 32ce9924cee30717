package stdio

import (
	"errors"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParseStdio(t *testing.T) {
	const fifo = "/run/containerd/fifo/x-stdout"
	tests := []struct {
		name  string
		stdio Stdio
		want  output
		err   error // nil, or the errdefs class
	}{
		{name: "empty", stdio: Stdio{}, want: output{kind: toPaths}},
		{name: "fifos", stdio: Stdio{Stdin: "/f/in", Stdout: fifo, Stderr: "/f/err"}, want: output{kind: toPaths}},
		{name: "relative stdin", stdio: Stdio{Stdin: "fifo/in"}, err: errdefs.ErrInvalidArgument},
		{name: "relative stdout", stdio: Stdio{Stdout: "./x"}, err: errdefs.ErrInvalidArgument},
		{name: "relative stderr", stdio: Stdio{Stdout: fifo, Stderr: "../x"}, err: errdefs.ErrInvalidArgument},
		{name: "binary", stdio: Stdio{Stdout: "binary:///usr/bin/logger", Stderr: "binary:///usr/bin/logger"},
			want: output{kind: toBinary, path: "/usr/bin/logger"}},
		{name: "binary without stderr", stdio: Stdio{Stdout: "binary:///usr/bin/logger"},
			want: output{kind: toBinary, path: "/usr/bin/logger"}},
		{name: "binary args sorted by key", stdio: Stdio{Stdout: "binary:///l?z=1&a=2&m"},
			want: output{kind: toBinary, path: "/l", args: []string{"a", "2", "m", "", "z", "1"}}},
		{name: "binary args escaped", stdio: Stdio{Stdout: "binary:///l?path=%2Fvar%2Flog%2Fa+b"},
			want: output{kind: toBinary, path: "/l", args: []string{"path", "/var/log/a b"}}},
		{name: "binary-v2", stdio: Stdio{Stdout: "binary-v2:///l?id=1"},
			want: output{kind: toBinary, path: "/l", args: []string{"id", "1"}, strictReady: true}},
		{name: "file", stdio: Stdio{Stdout: "file:///var/log/c.log", Stderr: "file:///var/log/c.log"},
			want: output{kind: toFile, path: "/var/log/c.log"}},
		{name: "file with stdin", stdio: Stdio{Stdin: "/f/in", Stdout: "file:///l"}, want: output{kind: toFile, path: "/l"}},
		{name: "binary with a host", stdio: Stdio{Stdout: "binary://usr/bin/logger"}, err: errdefs.ErrInvalidArgument},
		{name: "binary relative", stdio: Stdio{Stdout: "binary:logger"}, err: errdefs.ErrInvalidArgument},
		{name: "file unclean", stdio: Stdio{Stdout: "file:///var/log/../c.log"}, err: errdefs.ErrInvalidArgument},
		{name: "file root", stdio: Stdio{Stdout: "file://"}, err: errdefs.ErrInvalidArgument},
		{name: "unknown scheme", stdio: Stdio{Stdout: "fifo:///x"}, err: errdefs.ErrInvalidArgument},
		{name: "no scheme", stdio: Stdio{Stdout: "://x"}, err: errdefs.ErrInvalidArgument},
		{name: "bad escape", stdio: Stdio{Stdout: "binary:///l%zz"}, err: errdefs.ErrInvalidArgument},
		{name: "stderr a different uri", stdio: Stdio{Stdout: "file:///a", Stderr: "file:///b"}, err: errdefs.ErrInvalidArgument},
		{name: "stderr a fifo with a uri", stdio: Stdio{Stdout: "file:///a", Stderr: fifo}, err: errdefs.ErrInvalidArgument},
		{name: "uri on stderr only", stdio: Stdio{Stdout: fifo, Stderr: "file:///a"}, err: errdefs.ErrInvalidArgument},
		{name: "uri on stdin", stdio: Stdio{Stdin: "file:///a"}, err: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStdio(tt.stdio)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("parseStdio(%+v) error = %v, want %v", tt.stdio, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseStdio(%+v) = %v, want nil", tt.stdio, err)
			}
			if got.kind != tt.want.kind || got.path != tt.want.path || got.strictReady != tt.want.strictReady || !slices.Equal(got.args, tt.want.args) {
				t.Errorf("parseStdio(%+v) = %+v, want %+v", tt.stdio, got, tt.want)
			}
			if err := ValidateStdio(tt.stdio); err != nil {
				t.Errorf("ValidateStdio(%+v) = %v, want nil", tt.stdio, err)
			}
		})
	}
}
