package service

import (
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The Sandbox API's messages on the wire.
//
// containerd's generated package for containerd.runtime.sandbox.v1
// (api/runtime/sandbox/v1) holds the gRPC stubs beside the ttrpc ones, in
// one Go package: importing it links google.golang.org/grpc into the shim
// (measured: `go list -deps ./cmd/...` then lists google.golang.org/grpc
// and its transport). So the service reads and writes the messages'
// fields itself, with protowire, against the field numbers of
// api v1.12.0's runtime/sandbox/v1/sandbox.proto, cited per message. A
// request arrives as an emptypb.Empty, whose unknown fields keep every
// byte; a response goes out as an Empty whose unknown fields are the
// encoded message (proto.Marshal writes them verbatim). The tests encode
// and decode with the generated types, which tests may link.

// wireMsg is one message's fields, decoded shallowly.
type wireMsg struct {
	strs   map[protowire.Number][]string
	varint map[protowire.Number]uint64
}

func decodeWire(e *emptypb.Empty) (wireMsg, error) {
	return parseWire(e.ProtoReflect().GetUnknown())
}

func parseWire(b []byte) (wireMsg, error) {
	m := wireMsg{strs: map[protowire.Number][]string{}, varint: map[protowire.Number]uint64{}}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return m, fmt.Errorf("decode request: %w: %w", protowire.ParseError(n), errdefs.ErrInvalidArgument)
		}
		b = b[n:]
		switch typ {
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return m, fmt.Errorf("decode request: %w: %w", protowire.ParseError(n), errdefs.ErrInvalidArgument)
			}
			m.strs[num] = append(m.strs[num], string(v))
			b = b[n:]
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return m, fmt.Errorf("decode request: %w: %w", protowire.ParseError(n), errdefs.ErrInvalidArgument)
			}
			m.varint[num] = v
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return m, fmt.Errorf("decode request: %w: %w", protowire.ParseError(n), errdefs.ErrInvalidArgument)
			}
			b = b[n:]
		}
	}
	return m, nil
}

// str returns the last value of a string or bytes field, as proto3 does.
func (m wireMsg) str(num protowire.Number) string {
	v := m.strs[num]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// wireOut builds a response message.
type wireOut struct{ b []byte }

func (w *wireOut) str(num protowire.Number, v string) {
	if v == "" {
		return
	}
	w.b = protowire.AppendTag(w.b, num, protowire.BytesType)
	w.b = protowire.AppendString(w.b, v)
}

func (w *wireOut) uint(num protowire.Number, v uint64) {
	if v == 0 {
		return
	}
	w.b = protowire.AppendTag(w.b, num, protowire.VarintType)
	w.b = protowire.AppendVarint(w.b, v)
}

func (w *wireOut) msg(num protowire.Number, m proto.Message) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	w.bytes(num, data)
	return nil
}

func (w *wireOut) bytes(num protowire.Number, data []byte) {
	w.b = protowire.AppendTag(w.b, num, protowire.BytesType)
	w.b = protowire.AppendBytes(w.b, data)
}

// time writes a google.protobuf.Timestamp; a zero time is left out.
func (w *wireOut) time(num protowire.Number, t time.Time) error {
	if t.IsZero() {
		return nil
	}
	return w.msg(num, timestamppb.New(t))
}

// strMap writes a map<string, string> field: one entry message (key 1,
// value 2) per key.
func (w *wireOut) strMap(num protowire.Number, kv map[string]string) {
	for k, v := range kv {
		var e wireOut
		e.str(1, k)
		e.str(2, v)
		w.bytes(num, e.b)
	}
}

func (w *wireOut) empty() *emptypb.Empty {
	e := &emptypb.Empty{}
	if len(w.b) > 0 {
		e.ProtoReflect().SetUnknown(w.b)
	}
	return e
}

// decodeAny decodes a google.protobuf.Any field's bytes.
func decodeAny(b string) (*anypb.Any, error) {
	var a anypb.Any
	if err := proto.Unmarshal([]byte(b), &a); err != nil {
		return nil, fmt.Errorf("decode Any: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return &a, nil
}
