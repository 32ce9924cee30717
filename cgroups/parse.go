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
	b, err := os.ReadFile(filepath.Join(dir, name))
	switch {
	case err == nil:
		return string(b), true, nil
	case errors.Is(err, os.ErrNotExist), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EOPNOTSUPP):
		return "", false, nil
	}
	return "", false, err
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
	data, ok, err := readFile(dir, name)
	if !ok {
		return nil, false, err
	}
	kv = make(map[string]uint64)
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, false, badFormat(dir, name, line, nil)
		}
		v, err := parseUint(f[1])
		if err != nil {
			return nil, false, badFormat(dir, name, line, err)
		}
		kv[f[0]] = v
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
	kv, ok, err := readKV(dir, name)
	if !ok {
		return false, err
	}
	for _, f := range fields {
		if v, found := kv[f.key]; found {
			*f.dst = v
		}
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
