package ociruntime

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeFeatures writes a runtime that prints body for `features` and logs
// each run to a file; it returns the binary and a counter of its runs.
func fakeFeatures(t *testing.T, body string) (string, func() int) {
	t.Helper()
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	bin := filepath.Join(dir, "fake-runc")
	script := "#!/bin/sh\necho run >>" + runs + "\n[ \"$1\" = features ] || exit 3\nprintf '%s' '" + body + "'\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, func() int {
		data, err := os.ReadFile(runs)
		if os.IsNotExist(err) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(data), "run\n")
	}
}

func withCacheDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cache")
	old := FeaturesCacheDir
	FeaturesCacheDir = dir
	t.Cleanup(func() { FeaturesCacheDir = old })
	return dir
}

func TestFeaturesCachedPerBinaryFile(t *testing.T) {
	dir := withCacheDir(t)
	ctx := context.Background()
	bin, runs := fakeFeatures(t, `{"ociVersionMin":"1.0.0","ociVersionMax":"1.2.0"}`)
	for i := 0; i < 3; i++ {
		out, err := Features(ctx, bin)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), `"ociVersionMax":"1.2.0"`) {
			t.Fatalf("Features: got %q", out)
		}
	}
	if n := runs(); n != 1 {
		t.Fatalf("the binary ran %d times for three asks, want 1", n)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 || !strings.HasSuffix(entries[0].Name(), ".json") {
		t.Fatalf("cache dir: %v, %v; want one .json file and no temp file", entries, err)
	}
	if fi, _ := entries[0].Info(); fi.Mode().Perm() != 0o644 {
		t.Errorf("cache file mode %v, want 0644", fi.Mode().Perm())
	}

	// An upgraded binary (new mtime and content) is asked again, and its
	// answer replaces nothing of the old one's.
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho run >>"+filepath.Join(filepath.Dir(bin), "runs")+"\nprintf '{\"ociVersionMax\":\"1.3.0\"}'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(bin, later, later); err != nil {
		t.Fatal(err)
	}
	out, err := Features(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != `{"ociVersionMax":"1.3.0"}` {
		t.Fatalf("after the upgrade: got %q, want the new binary's answer", out)
	}
	if n := runs(); n != 2 {
		t.Fatalf("the binary ran %d times, want 2 (once per binary file)", n)
	}
}

func TestFeaturesCacheDamagedOrUnwritable(t *testing.T) {
	ctx := context.Background()
	bin, runs := fakeFeatures(t, `{"ociVersionMax":"1.2.0"}`)
	t.Run("damaged entry is replaced", func(t *testing.T) {
		dir := withCacheDir(t)
		key, err := keyOf(bin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		entry := filepath.Join(dir, key.fileName())
		if err := os.WriteFile(entry, []byte(`{"ociVersionMax":`), 0o644); err != nil {
			t.Fatal(err)
		}
		before := runs()
		if out, err := Features(ctx, bin); err != nil || string(out) != `{"ociVersionMax":"1.2.0"}` {
			t.Fatalf("Features: %q, %v", out, err)
		}
		if runs() != before+1 {
			t.Fatal("a truncated cache entry was served instead of asking the binary")
		}
		if data, _ := os.ReadFile(entry); string(data) != `{"ociVersionMax":"1.2.0"}` {
			t.Fatalf("cache entry after the run: %q", data)
		}
	})
	t.Run("unwritable cache still answers", func(t *testing.T) {
		dir := withCacheDir(t)
		// A file where the directory should be: MkdirAll fails.
		if err := os.WriteFile(dir, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		before := runs()
		for i := 0; i < 2; i++ {
			if out, err := Features(ctx, bin); err != nil || string(out) != `{"ociVersionMax":"1.2.0"}` {
				t.Fatalf("Features: %q, %v", out, err)
			}
		}
		if runs() != before+2 {
			t.Fatalf("ran %d times, want 2 (nothing could be kept)", runs()-before)
		}
	})
}

func TestFeaturesFailureNotCached(t *testing.T) {
	dir := withCacheDir(t)
	ctx := context.Background()
	for _, tc := range []struct{ name, body string }{
		{"no JSON", "features: unknown command"},
		{"fails", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, runs := fakeFeatures(t, tc.body)
			if tc.body == "" {
				if err := os.WriteFile(bin, []byte("#!/bin/sh\necho run >>"+filepath.Join(filepath.Dir(bin), "runs")+"\necho 'no such command' >&2\nexit 1\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 2; i++ {
				if _, err := Features(ctx, bin); err == nil {
					t.Fatal("Features: got nil error")
				}
			}
			if n := runs(); n != 2 {
				t.Fatalf("ran %d times, want 2: a failure must not be kept", n)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("cache dir has %d entries after failures only", len(entries))
	}
	if _, err := Features(ctx, "/nonexistent/runtime"); err == nil {
		t.Fatal("a missing binary: got nil error")
	}
}
