package wire_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/oplog/internal/wire"
)

func TestFramesPassThroughAndMessagesAreProtobuf(t *testing.T) {
	t.Parallel()
	var c wire.Codec
	assert.Equal(t, "proto", c.Name(), "nothing changes on the wire")

	msg := &oplogv1.IngestResponse{Accepted: 3, Duplicates: 1}
	data, err := c.Marshal(msg)
	require.NoError(t, err)
	standard, err := proto.Marshal(msg)
	require.NoError(t, err)
	assert.Equal(t, standard, data.Materialize())

	var frame wire.Frame
	require.NoError(t, c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(standard)}, &frame))
	assert.Equal(t, standard, frame.Bytes, "a frame receives the bytes untouched")

	out, err := c.Marshal(&frame)
	require.NoError(t, err)
	assert.Equal(t, standard, out.Materialize(), "and sends them untouched")

	var back oplogv1.IngestResponse
	require.NoError(t, c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(standard)}, &back))
	assert.True(t, proto.Equal(msg, &back))

	assert.Error(t, c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(standard)}, new(int)))
}
