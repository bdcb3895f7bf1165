package ingest

import (
	"testing"

	"github.com/stretchr/testify/assert"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
)

// The decoder reads field numbers by hand: its table must name every
// field of the contract by its number, or a field added to the proto
// would be skipped as unknown and silently dropped.
func TestFieldTableMatchesTheContract(t *testing.T) {
	t.Parallel()
	fields := (&oplogv1.OperationLog{}).ProtoReflect().Descriptor().Fields()
	assert.Len(t, fieldNames, fields.Len(), "the decoder's table and OperationLog have as many fields")
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		assert.Equal(t, string(fd.Name()), fieldNames[fd.Number()], "field %d", fd.Number())
	}
}
