package oplogsvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/oplog/internal/ingest"
	"github.com/platforma/platforma/services/oplog/internal/store"
	"github.com/platforma/platforma/services/oplog/internal/wire"
)

// Ingest receives a stream of rows and answers once every accepted row is
// committed.
func (s *Server) Ingest(stream grpc.ClientStreamingServer[oplogv1.IngestRequest, oplogv1.IngestResponse]) error {
	ctx := stream.Context()
	resp := &oplogv1.IngestResponse{}
	var chunks []*ingest.Chunk
	var index int64
	for {
		frame, err := receiveMessage(stream)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		rows, err := s.decodeMessage(ctx, frame, &index, resp)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			continue
		}
		chunk, err := s.writer.Submit(ctx, rows)
		if err != nil {
			if errors.Is(err, ingest.ErrBusy) {
				return saturated(msgDatabaseBehind)
			}
			return err
		}
		chunks = append(chunks, chunk)
	}
	for _, c := range chunks {
		inserted, duplicates, err := c.Wait(ctx)
		if err != nil {
			return err
		}
		resp.Accepted += int64(inserted)
		resp.Duplicates += int64(duplicates)
	}
	return stream.SendAndClose(resp)
}

// receiveMessage reads the stream's next message as bytes. Waiting for it
// costs nothing but the stream's goroutine: a stream that sends nothing
// holds no decode slot, so idle streams cannot starve busy ones. The
// server ends a stream that stays silent longer than its receive idle
// timeout (-recv-idle-timeout).
func receiveMessage(stream grpc.ServerStream) (*wire.Frame, error) {
	frame := &wire.Frame{}
	if err := stream.RecvMsg(frame); err != nil {
		return nil, err
	}
	return frame, nil
}

// decodeMessage validates and converts the rows of one received message
// inside a decode slot: at most ReceiveSlots messages are decoded at once,
// which bounds the CPU and the memory that decoding takes. Rejected rows
// are added to resp; index counts the stream's rows.
func (s *Server) decodeMessage(ctx context.Context, frame *wire.Frame, index *int64, resp *oplogv1.IngestResponse) ([]store.Row, error) {
	waitCtx, cancel := context.WithTimeout(ctx, s.slotWait)
	defer cancel()
	if err := s.receive.Acquire(waitCtx, 1); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, saturated(msgDecodersBusy)
	}
	defer s.receive.Release(1)

	logs, err := ingest.SplitRequest(frame.Bytes)
	if err != nil {
		return nil, apierr.InvalidArgument(apierr.FieldViolation("logs", err.Error()))
	}
	if len(logs) > wire.MaxRowsPerMessage {
		return nil, apierr.InvalidArgument(apierr.FieldViolation("logs", fmt.Sprintf("at most %d rows per message", wire.MaxRowsPerMessage)))
	}
	if *index+int64(len(logs)) > wire.MaxRowsPerStream {
		return nil, apierr.InvalidArgument(apierr.FieldViolation("logs", fmt.Sprintf("at most %d rows per stream; open another stream", wire.MaxRowsPerStream)))
	}
	now := s.now()
	rows := make([]store.Row, 0, len(logs))
	for _, b := range logs {
		row, rej := s.convert.Convert(b, now)
		if rej != nil {
			resp.Rejected = append(resp.Rejected, &oplogv1.RejectedLog{Index: *index, Id: ingest.RowID(b), Field: rej.Field, Reason: rej.Reason})
			s.metrics.Rejected(rej.Field)
		} else {
			rows = append(rows, row)
		}
		*index++
	}
	return rows, nil
}

// Why Ingest is saturated: each names its cause, so an operator knows
// whether to add database capacity or server CPU.
const (
	msgDatabaseBehind = "ingest is saturated: rows wait for the database to commit them (the database is slower than producers); resend after the retry delay"
	msgDecodersBusy   = "ingest is saturated: every decode slot is busy (this replica's CPU is slower than producers); resend after the retry delay"
)

// saturated is RESOURCE_EXHAUSTED with its cause and a retry delay.
func saturated(msg string) error {
	st := status.New(codes.ResourceExhausted, msg)
	if d, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)}); derr == nil {
		st = d
	}
	return st.Err()
}
