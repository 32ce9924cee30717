package api_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	// The upstream generated packages register the descriptors the copies
	// are compared with; tests may link their gRPC stubs.
	_ "github.com/containerd/containerd/api/runtime/sandbox/v1"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	_ "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/api/cripb"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/api/sandboxpb"
)

// copyPrefix is what a copy puts in front of its upstream proto package.
const copyPrefix = "sandboxshim."

// upstreamName is the full name of what a copy's name copies. Names
// outside the copies (google.protobuf, containerd.types) are upstream's
// already.
func upstreamName(n protoreflect.FullName) protoreflect.FullName {
	return protoreflect.FullName(strings.TrimPrefix(string(n), copyPrefix))
}

// TestTrimmedMatchesUpstream checks every message, field and enum value
// of the copies against the upstream generated descriptor of the same
// name: a field whose number, name, kind, cardinality, presence or
// message/enum type differs would put different bytes on the wire.
func TestTrimmedMatchesUpstream(t *testing.T) {
	for _, fd := range []protoreflect.FileDescriptor{
		sandboxpb.File_internal_api_sandboxpb_sandbox_proto,
		cripb.File_internal_api_cripb_api_proto,
	} {
		t.Run(fd.Path(), func(t *testing.T) {
			if !strings.HasPrefix(string(fd.Package()), copyPrefix) {
				t.Fatalf("package %s: want the %q prefix, or it collides with upstream's in the registry", fd.Package(), copyPrefix)
			}
			if fd.Services().Len() != 0 {
				t.Errorf("declares %d services: stubs would be generated from them", fd.Services().Len())
			}
			diffs := diffFile(fd, protoregistry.GlobalFiles)
			for _, d := range diffs {
				t.Error(d)
			}
		})
	}
}

// TestDiffFileCatchesMistakes feeds the comparison a copy with one of each
// mistake, so that a comparison which stops looking fails here.
func TestDiffFileCatchesMistakes(t *testing.T) {
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	u32 := descriptorpb.FieldDescriptorProto_TYPE_UINT32.Enum()
	optional := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	repeated := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	field := func(name string, num int32, label *descriptorpb.FieldDescriptorProto_Label, typ *descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{Name: &name, JsonName: &name, Number: &num, Label: label, Type: typ}
	}
	name := func(s string) *string { return &s }
	fdp := &descriptorpb.FileDescriptorProto{
		Name:    name("mistakes.proto"),
		Package: name("sandboxshim.runtime.v1"),
		Syntax:  name("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: name("PodSandboxMetadata"),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("name", 1, optional, str),         // right
				field("namespace", 2, optional, str),    // upstream's 2 is uid
				field("attempt", 4, repeated, u32),      // upstream's is singular
				field("not_upstream", 9, optional, str), // no field 9 upstream
			},
		}, {
			Name: name("NoSuchMessage"),
		}},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: name("NamespaceMode"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: name("POD"), Number: new(int32)},
				{Name: name("HOST"), Number: func() *int32 { n := int32(2); return &n }()},
			},
		}},
	}
	fd, err := protodesc.NewFile(fdp, new(protoregistry.Files))
	if err != nil {
		t.Fatal(err)
	}
	got := diffFile(fd, protoregistry.GlobalFiles)
	for _, want := range []string{
		"runtime.v1.PodSandboxMetadata field 2: name namespace, upstream uid",
		"runtime.v1.PodSandboxMetadata field 4: cardinality repeated, upstream optional",
		"runtime.v1.PodSandboxMetadata field 9 (not_upstream): not upstream",
		"runtime.v1.NoSuchMessage: no such message upstream",
		"runtime.v1.NamespaceMode value 2: name HOST, upstream NODE",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("diffs %q: want %q among them", got, want)
		}
	}
	if len(got) != 5 {
		t.Errorf("got %d diffs %q, want 5", len(got), got)
	}
}

// diffFile returns how fd's messages and enums differ from upstream's,
// found by name in upstream.
func diffFile(fd protoreflect.FileDescriptor, upstream *protoregistry.Files) []string {
	var diffs []string
	for i := range fd.Messages().Len() {
		diffs = append(diffs, diffMessage(fd.Messages().Get(i), upstream)...)
	}
	for i := range fd.Enums().Len() {
		diffs = append(diffs, diffEnum(fd.Enums().Get(i), upstream)...)
	}
	return diffs
}

func diffMessage(m protoreflect.MessageDescriptor, upstream *protoregistry.Files) []string {
	name := upstreamName(m.FullName())
	d, err := upstream.FindDescriptorByName(name)
	up, ok := d.(protoreflect.MessageDescriptor)
	if err != nil || !ok {
		return []string{string(name) + ": no such message upstream"}
	}
	var diffs []string
	for i := range m.Fields().Len() {
		f := m.Fields().Get(i)
		uf := up.Fields().ByNumber(f.Number())
		if uf == nil {
			diffs = append(diffs, fmt.Sprintf("%s field %d (%s): not upstream", name, f.Number(), f.Name()))
			continue
		}
		for _, c := range []struct {
			what      string
			got, want any
		}{
			{"name", f.Name(), uf.Name()},
			{"kind", f.Kind(), uf.Kind()},
			{"cardinality", f.Cardinality(), uf.Cardinality()},
			{"presence", f.HasPresence(), uf.HasPresence()},
			{"map", f.IsMap(), uf.IsMap()},
			{"type", typeName(f), typeName(uf)},
		} {
			if c.got != c.want {
				diffs = append(diffs, fmt.Sprintf("%s field %d: %s %v, upstream %v", name, f.Number(), c.what, c.got, c.want))
			}
		}
	}
	// Nested messages include map entries: their key and value fields are
	// compared there.
	for i := range m.Messages().Len() {
		diffs = append(diffs, diffMessage(m.Messages().Get(i), upstream)...)
	}
	for i := range m.Enums().Len() {
		diffs = append(diffs, diffEnum(m.Enums().Get(i), upstream)...)
	}
	return diffs
}

func diffEnum(e protoreflect.EnumDescriptor, upstream *protoregistry.Files) []string {
	name := upstreamName(e.FullName())
	d, err := upstream.FindDescriptorByName(name)
	up, ok := d.(protoreflect.EnumDescriptor)
	if err != nil || !ok {
		return []string{string(name) + ": no such enum upstream"}
	}
	var diffs []string
	for i := range e.Values().Len() {
		v := e.Values().Get(i)
		uv := up.Values().ByNumber(v.Number())
		switch {
		case uv == nil:
			diffs = append(diffs, fmt.Sprintf("%s value %d (%s): not upstream", name, v.Number(), v.Name()))
		case uv.Name() != v.Name():
			diffs = append(diffs, fmt.Sprintf("%s value %d: name %s, upstream %s", name, v.Number(), v.Name(), uv.Name()))
		}
	}
	return diffs
}

// typeName is the upstream name of a message or enum field's type.
func typeName(f protoreflect.FieldDescriptor) string {
	switch {
	case f.Message() != nil:
		return string(upstreamName(f.Message().FullName()))
	case f.Enum() != nil:
		return string(upstreamName(f.Enum().FullName()))
	}
	return ""
}
