// Package wire moves Ingest messages as raw protobuf bytes, so that both
// ends can encode and decode OperationLog rows directly instead of through
// generated message objects. google.protobuf.Struct payloads make those
// objects expensive (a map and a message per value), and decoding a whole
// message in one go means one string that is not UTF-8 fails every row of
// it; working on the bytes, the server refuses such a row alone.
//
// The bytes are ordinary protobuf: a client that uses the generated stubs
// (grpcurl, other languages) talks to the same server unchanged.
package wire

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Frame is one message as bytes: sent or received as-is by Codec.
type Frame struct {
	Bytes []byte
}

// Codec is the standard protobuf codec that also carries Frames untouched.
type Codec struct{}

// Name is "proto": on the wire nothing changes.
func (Codec) Name() string { return "proto" }

// Marshal encodes v; a *Frame is sent as is.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*Frame); ok {
		return mem.BufferSlice{mem.SliceBuffer(f.Bytes)}, nil
	}
	return protoCodec().Marshal(v)
}

// Unmarshal decodes data into v; into a *Frame it copies the bytes.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*Frame); ok {
		f.Bytes = data.Materialize()
		return nil
	}
	if _, ok := v.(proto.Message); !ok {
		return fmt.Errorf("wire: cannot unmarshal into %T", v)
	}
	return protoCodec().Unmarshal(data, v)
}

// protoCodec is grpc's registered protobuf codec, used for everything that
// is not a Frame.
func protoCodec() encoding.CodecV2 { return encoding.GetCodecV2("proto") }
