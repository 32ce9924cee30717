package cgroups

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// maxV1 and maxV2 are what a limit of "max" reads as: 0 on cgroup v1 and
// math.MaxUint64 on v2, as containerd's cgroups library reports them (its
// cgroup1 readUint and cgroup2 getStatFileContentUint64). On v2 it
// matters: containerd's CRI plugin takes a memory limit above 1<<62 as
// none (isMemoryUnlimited) and would read a 0 as a limit of 0.
const (
	maxV1 uint64 = 0
	maxV2 uint64 = math.MaxUint64
)

// checkDir says whether a container's cgroup directory is there: one that
// is not is a cgroup removed (or never made), which Stats reports as
// NotFound.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("cgroup %s: %w", dir, errdefs.ErrNotFound)
	case err != nil:
		return fmt.Errorf("cgroup %s: %w", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("cgroup %s is not a directory: %w", dir, errdefs.ErrNotFound)
	}
	return nil
}

// readFile returns the content of one cgroup file. ok is false when the
// file is not there (a controller the kernel lacks or has not enabled, no
// swap accounting) or the kernel will not give it (PSI switched off), so
// that the caller leaves its fields alone.
func readFile(dir, name string) (data string, ok bool, err error) {
	b, err := readBytes(filepath.Join(dir, name))
	defer putBuf(b)
	switch {
	case err == nil:
		return string(*b), true, nil
	case errors.Is(err, os.ErrNotExist), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EOPNOTSUPP):
		return "", false, nil
	}
	return "", false, err
}

// bufs holds the buffers cgroup files are read into. containerd 2.4's
// CRI plugin asks every container's metrics once a second (its stats
// collector), so Stats is the one call a shim serves all its life, and
// os.ReadFile's per-file garbage (an *os.File with its finalizer and poll
// registration, a Stat, a buffer grown from 512 bytes: 44 KiB and 247
// allocations per v1 Stats here) piled up to Go's first collection goal
// between collections: about 4 MiB more resident per pod under CRI than
// in the same pod without it (issue 15). A file is read with plain
// open/read/close into a pooled buffer; only the string handed to the
// parser is new.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// putBuf returns a buffer of readBytes to the pool.
func putBuf(b *[]byte) { bufs.Put(b) }

// readBytes reads the whole file at path into a pooled buffer, which the
// caller returns with putBuf (also on error). cgroupfs and procfs files
// report no size and are read until a read returns 0.
func readBytes(path string) (*[]byte, error) {
	b := bufs.Get().(*[]byte)
	*b = (*b)[:0]
	fd, err := openRetry(path)
	if err != nil {
		return b, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	for {
		if len(*b) == cap(*b) {
			*b = slices.Grow(*b, cap(*b))
		}
		n, err := unix.Read(fd, (*b)[len(*b):cap(*b)])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return b, &os.PathError{Op: "read", Path: path, Err: err}
		case n == 0:
			return b, nil
		}
		*b = (*b)[:len(*b)+n]
	}
}

// openRetry opens path read-only, retrying on EINTR as package os does.
func openRetry(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// badFormat is the error for a cgroup file whose content is not what the
// kernel writes: the shim's assumptions, not the client, are wrong.
func badFormat(dir, name, what string, err error) error {
	if err != nil {
		return fmt.Errorf("parse %s: %q: %v: %w", filepath.Join(dir, name), what, err, errdefs.ErrInternal)
	}
	return fmt.Errorf("parse %s: %q: %w", filepath.Join(dir, name), what, errdefs.ErrInternal)
}

// parseUint parses a cgroup counter. A negative value (a v1 limit written
// as -1) reads as 0, as containerd's cgroups library reads it.
func parseUint(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err == nil {
		return v, nil
	}
	if strings.HasPrefix(s, "-") {
		if _, ierr := strconv.ParseInt(s, 10, 64); ierr == nil || errors.Is(ierr, strconv.ErrRange) {
			return 0, nil
		}
	}
	return 0, err
}

// readUint reads a file holding one number, or "max" meaning no limit,
// into *dst; unlimited is what "max" reads as. A missing file leaves
// *dst.
func readUint(dir, name string, unlimited uint64, dst *uint64) error {
	data, ok, err := readFile(dir, name)
	if !ok {
		return err
	}
	s := strings.TrimSpace(data)
	if s == "max" {
		*dst = unlimited
		return nil
	}
	v, err := parseUint(s)
	if err != nil {
		return badFormat(dir, name, s, err)
	}
	*dst = v
	return nil
}

// readKV reads a flat keyed file ("key value" per line: memory.stat,
// cpu.stat) into a map. ok is false when the file is missing.
func readKV(dir, name string) (kv map[string]uint64, ok bool, err error) {
	kv = make(map[string]uint64)
	ok, err = scanKV(dir, name, func(key string, v uint64) { kv[key] = v })
	if !ok {
		return nil, false, err
	}
	return kv, true, nil
}

// field names one key of a keyed file and where its value goes.
type field struct {
	key string
	dst *uint64
}

// readFields reads a keyed file and stores the value of each field's key;
// keys it does not list are ignored, listed keys it lacks stay as they
// are. ok is false when the file is missing.
func readFields(dir, name string, fields []field) (ok bool, err error) {
	return scanKV(dir, name, func(key string, v uint64) {
		for _, f := range fields {
			if f.key == key {
				*f.dst = v
				return
			}
		}
	})
}

// scanKV reads a flat keyed file and calls fn with each line's key and
// value, in the file's order; blank lines are skipped, a line that is not
// two words with a number second is the file's bad format. ok is false
// when the file is missing. It walks the content in place: the keyed
// files are read once a second per container under CRI (see bufs).
func scanKV(dir, name string, fn func(key string, v uint64)) (ok bool, err error) {
	data, ok, err := readFile(dir, name)
	if !ok {
		return false, err
	}
	for rest := data; rest != ""; {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		i := strings.IndexFunc(line, unicode.IsSpace)
		if i < 0 {
			return false, badFormat(dir, name, line, nil)
		}
		key, val := line[:i], strings.TrimSpace(line[i:])
		if strings.IndexFunc(val, unicode.IsSpace) >= 0 {
			return false, badFormat(dir, name, line, nil)
		}
		v, err := parseUint(val)
		if err != nil {
			return false, badFormat(dir, name, line, err)
		}
		fn(key, v)
	}
	return true, nil
}

// hugePageSizes lists the page sizes ("2MB", "1GB") of the hugetlb files
// in dir named hugetlb.<size><suffix>, smallest first (the order the
// kernel lists /sys/kernel/mm/hugepages in, which containerd's cgroups
// follows). The reservation files (hugetlb.<size>.rsvd.*) are not sizes.
func hugePageSizes(dir, suffix string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var sizes []string
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), "hugetlb.")
		if !ok {
			continue
		}
		size, ok := strings.CutSuffix(rest, suffix)
		if ok && size != "" && !strings.Contains(size, ".") {
			sizes = append(sizes, size)
		}
	}
	slices.SortFunc(sizes, func(a, b string) int {
		return cmp.Or(cmp.Compare(pageBytes(a), pageBytes(b)), strings.Compare(a, b))
	})
	return sizes, nil
}

// pageBytes is the size a hugetlb page size name stands for ("64KB",
// "2MB", "1GB", the kernel's hugetlb_cgroup names); 0 for any other name.
func pageBytes(size string) uint64 {
	for unit, shift := range map[string]uint{"KB": 10, "MB": 20, "GB": 30} {
		if n, ok := strings.CutSuffix(size, unit); ok {
			v, err := strconv.ParseUint(n, 10, 64)
			if err != nil {
				return 0
			}
			return v << shift
		}
	}
	return 0
}
