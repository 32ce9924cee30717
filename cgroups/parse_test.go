package cgroups

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadFile: a file longer than the pooled buffer is read whole; a
// shorter one read after it is not padded with the longer one's bytes;
// a missing file is not there, not an error; a file that will not read
// is an error naming it.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("8:0 Read 1234567\n", 1000) // 17,000 bytes
	writeFiles(t, dir, map[string]string{"long": long, "short": "42\n"})
	for range 3 {
		for name, want := range map[string]string{"long": long, "short": "42\n"} {
			got, ok, err := readFile(dir, name)
			if err != nil || !ok || got != want {
				t.Fatalf("readFile(%s) = %d bytes, %v, %v; want %d bytes", name, len(got), ok, err, len(want))
			}
		}
	}
	if _, ok, err := readFile(dir, "missing"); ok || err != nil {
		t.Errorf("readFile(missing) = %v, %v; want not there, no error", ok, err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := readFile(dir, "sub"); ok || err == nil || !strings.Contains(err.Error(), "sub") {
		t.Errorf("readFile(a directory) = %v, %v; want an error naming it", ok, err)
	}
}
