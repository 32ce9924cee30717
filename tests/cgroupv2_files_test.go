package tests

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Helpers of the cgroup v2 tests (cgroupv2_test.go): the host check, the
// cgroup files, and a flat form of the v2 metrics that the files, the
// shim's answer and containerd's cgroup2 package can all be put in, to
// be compared field by field.

// cgroupV2Root is where a pure cgroup v2 host mounts the hierarchy.
const cgroupV2Root = "/sys/fs/cgroup"

// requireCgroupV2 skips t unless /sys/fs/cgroup is a cgroup2 file system
// (this suite's own machines are cgroup v1/hybrid: there the tests run
// in the qemu guest of tests/vm/run.sh). With SHIM_TEST_CGROUPV2=1, as
// the guest sets it, a host that is not pure v2 fails the test instead,
// so that a guest that came up wrong cannot pass by skipping.
func requireCgroupV2(t *testing.T) {
	t.Helper()
	var st unix.Statfs_t
	err := unix.Statfs(cgroupV2Root, &st)
	if err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return
	}
	why := fmt.Sprintf("%s is not a cgroup v2 hierarchy (statfs type %#x, error %v): cgroup v1 or hybrid host; the cgroup v2 tests run in the qemu guest lane (tests/vm/run.sh)",
		cgroupV2Root, st.Type, err)
	if os.Getenv("SHIM_TEST_CGROUPV2") == "1" {
		t.Fatal("SHIM_TEST_CGROUPV2=1, but " + why)
	}
	t.Skip(why)
}

// cgDir is the directory of cgroup path (as a spec's cgroupsPath names it).
func cgDir(path string) string { return filepath.Join(cgroupV2Root, path) }

// cgRead returns the trimmed content of a file of cgroup path, failing t
// if it cannot be read.
func cgRead(t *testing.T, path, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(cgDir(path), name))
	if err != nil {
		t.Fatalf("cgroup %s: %v", path, err)
	}
	return strings.TrimSpace(string(data))
}

// cgKV parses a file of "key value" lines of cgroup path (memory.events,
// cgroup.events, cpu.stat).
func cgKV(t *testing.T, path, name string) map[string]uint64 {
	t.Helper()
	kv, err := parseKV(cgRead(t, path, name))
	if err != nil {
		t.Fatalf("cgroup %s: %s: %v", path, name, err)
	}
	return kv
}

func parseKV(data string) (map[string]uint64, error) {
	kv := map[string]uint64{}
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("line %q is not \"key value\"", line)
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %q: %w", line, err)
		}
		kv[f[0]] = v
	}
	return kv, nil
}

// cgDump returns the named files of cgroup path with their contents, for
// failure messages.
func cgDump(path string, names ...string) string {
	var b strings.Builder
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(cgDir(path), n))
		if err != nil {
			fmt.Fprintf(&b, "  %s: %v\n", n, err)
			continue
		}
		fmt.Fprintf(&b, "  %s:\n    %s\n", n, strings.ReplaceAll(strings.TrimSpace(string(data)), "\n", "\n    "))
	}
	return b.String()
}

// assertCgroupGone fails t if the directory of cgroup path still exists.
func assertCgroupGone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(cgDir(path)); !os.IsNotExist(err) {
		t.Errorf("cgroup %s still there after delete (%v); it holds:\n%s", path, err, cgDump(path, "cgroup.procs", "cgroup.events"))
	}
}

// flatMetrics is a v2 Metrics, or what the cgroup files say of it, as
// leaf values by proto field path: "memory.anon", "cpu.psi.some.avg10",
// "io.usage[254:0].wbytes", "hugetlb[2MB].max". A key ending in "{}"
// says that the message at that path is present (metrics only).
type flatMetrics map[string]float64

// flatten puts m in flat form. Scalars that are zero are left out, as
// proto3 leaves them out: a missing key reads as 0.
func flatten(m proto.Message) flatMetrics {
	out := flatMetrics{}
	flattenInto(out, "", m.ProtoReflect())
	return out
}

func flattenInto(out flatMetrics, prefix string, m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := prefix + string(fd.Name())
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				elem := l.Get(i).Message()
				p := fmt.Sprintf("%s[%s]", name, listKey(elem, i))
				out[p+"{}"] = 1
				flattenInto(out, p+".", elem)
			}
		case fd.Kind() == protoreflect.MessageKind:
			out[name+"{}"] = 1
			flattenInto(out, name+".", v.Message())
		case fd.Kind() == protoreflect.DoubleKind || fd.Kind() == protoreflect.FloatKind:
			out[name] = v.Float()
		case isListKey(m, fd):
		case fd.Kind() == protoreflect.Uint64Kind || fd.Kind() == protoreflect.Uint32Kind:
			out[name] = float64(v.Uint())
		case fd.Kind() == protoreflect.Int64Kind || fd.Kind() == protoreflect.Int32Kind:
			out[name] = float64(v.Int())
		}
		return true
	})
}

// listKey names a list element by what identifies it: a device's
// major:minor, a huge page size, an RDMA device; else its index.
func listKey(m protoreflect.Message, i int) string {
	switch e := m.Interface().(type) {
	case *v2stats.IOEntry:
		return fmt.Sprintf("%d:%d", e.Major, e.Minor)
	case *v2stats.HugeTlbStat:
		return e.Pagesize
	case *v2stats.RdmaEntry:
		return e.Device
	}
	return strconv.Itoa(i)
}

// isListKey reports whether field fd of m is part of what listKey names
// m by (a device's major and minor number).
func isListKey(m protoreflect.Message, fd protoreflect.FieldDescriptor) bool {
	_, io := m.Interface().(*v2stats.IOEntry)
	return io && (fd.Name() == "major" || fd.Name() == "minor")
}

// leaves returns f without its presence keys.
func (f flatMetrics) leaves() flatMetrics {
	out := flatMetrics{}
	for k, v := range f {
		if !strings.HasSuffix(k, "{}") {
			out[k] = v
		}
	}
	return out
}

// presence returns f's presence keys, sorted.
func (f flatMetrics) presence() []string {
	var out []string
	for k := range f {
		if strings.HasSuffix(k, "{}") {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// compareBounded returns one line per key of got, lo or hi whose value in
// got is not between its values in lo and hi (read before and after got;
// equal where nothing moved meanwhile). A missing key is 0.
func compareBounded(got, lo, hi flatMetrics) []string {
	keys := map[string]bool{}
	for _, f := range []flatMetrics{got, lo, hi} {
		for k := range f {
			keys[k] = true
		}
	}
	var bad []string
	for k := range keys {
		g, a, b := got[k], lo[k], hi[k]
		if g < math.Min(a, b) || g > math.Max(a, b) {
			if a == b {
				bad = append(bad, fmt.Sprintf("%s = %v, want %v", k, g, a))
			} else {
				bad = append(bad, fmt.Sprintf("%s = %v, want between %v and %v", k, g, a, b))
			}
		}
	}
	sort.Strings(bad)
	return bad
}

// Single-value files and the field they fill.
var v2SingleFiles = []struct{ file, key string }{
	{"pids.current", "pids.current"},
	{"pids.max", "pids.limit"},
	{"memory.current", "memory.usage"},
	{"memory.max", "memory.usage_limit"},
	{"memory.peak", "memory.max_usage"},
	{"memory.swap.current", "memory.swap_usage"},
	{"memory.swap.max", "memory.swap_limit"},
	{"memory.swap.peak", "memory.swap_max_usage"},
}

// Files of "key value" lines and the message their keys are fields of.
var v2KVFiles = []struct {
	file, prefix string
	msg          proto.Message
}{
	{"cpu.stat", "cpu.", &v2stats.CPUStat{}},
	{"memory.stat", "memory.", &v2stats.MemoryStat{}},
	{"memory.events", "memory_events.", &v2stats.MemoryEvents{}},
}

// readCgroupFlat reads the files of cgroup path into the form flatten
// gives the metrics: every file the kernel has that the v2 Metrics type
// has a field for (rdma aside: the guest has no RDMA device). A "max"
// reads as the largest uint64, as containerd's cgroup2 reads it.
func readCgroupFlat(t *testing.T, path string) flatMetrics {
	t.Helper()
	dir := cgDir(path)
	out := flatMetrics{}
	read := func(name string) (string, bool) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if os.IsNotExist(err) {
			return "", false
		}
		if err != nil {
			t.Fatalf("cgroup %s: %v", path, err)
		}
		return strings.TrimSpace(string(data)), true
	}
	uint64Of := func(name, s string) float64 {
		if s == "max" {
			return float64(math.MaxUint64)
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("cgroup %s: %s: %q: %v", path, name, s, err)
		}
		return float64(v)
	}
	for _, f := range v2SingleFiles {
		if s, ok := read(f.file); ok {
			out[f.key] = uint64Of(f.file, s)
		}
	}
	for _, f := range v2KVFiles {
		s, ok := read(f.file)
		if !ok {
			continue
		}
		kv, err := parseKV(s)
		if err != nil {
			t.Fatalf("cgroup %s: %s: %v", path, f.file, err)
		}
		fields := f.msg.ProtoReflect().Descriptor().Fields()
		for k, v := range kv {
			if fields.ByName(protoreflect.Name(k)) != nil {
				out[f.prefix+k] = float64(v)
			}
		}
	}
	for _, c := range []string{"cpu", "memory", "io"} {
		s, ok := read(c + ".pressure")
		if !ok {
			continue
		}
		for _, line := range strings.Split(s, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			for _, kv := range f[1:] {
				k, v, _ := strings.Cut(kv, "=")
				x, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("cgroup %s: %s.pressure: %q: %v", path, c, line, err)
				}
				out[c+".psi."+f[0]+"."+k] = x
			}
		}
	}
	if s, ok := read("io.stat"); ok {
		for _, line := range strings.Split(s, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			for _, kv := range f[1:] {
				k, v, _ := strings.Cut(kv, "=")
				if !slices.Contains([]string{"rbytes", "wbytes", "rios", "wios"}, k) {
					continue
				}
				out["io.usage["+f[0]+"]."+k] = uint64Of("io.stat", v)
			}
		}
	}
	sizes, _ := filepath.Glob(filepath.Join(dir, "hugetlb.*.current"))
	for _, p := range sizes {
		size := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "hugetlb."), ".current")
		if strings.Contains(size, ".") {
			// hugetlb.2MB.rsvd.current: the reservations, which the
			// metrics do not have.
			continue
		}
		for _, f := range []struct{ file, key string }{{"current", "current"}, {"max", "max"}} {
			if s, ok := read("hugetlb." + size + "." + f.file); ok {
				out["hugetlb["+size+"]."+f.key] = uint64Of("hugetlb", s)
			}
		}
		if s, ok := read("hugetlb." + size + ".events"); ok {
			kv, err := parseKV(s)
			if err != nil {
				t.Fatalf("cgroup %s: hugetlb.%s.events: %v", path, size, err)
			}
			out["hugetlb["+size+"].failcnt"] = float64(kv["max"])
		}
	}
	return out
}
