package apierr

import (
	"context"
	"log/slog"
	"regexp"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
)

// ItemRefusals makes the items a batch call refused as visible as refused
// calls: the call itself succeeds, so without this neither the call log
// nor grpc_server_handled_total would show them.
type ItemRefusals struct {
	log     *slog.Logger
	refused *prometheus.CounterVec
}

// NewItemRefusals returns the interceptor and its counter.
func NewItemRefusals(log *slog.Logger) *ItemRefusals {
	return &ItemRefusals{
		log: log,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "platforma_batch_items_refused_total",
			Help: "Items of batch calls refused on their own (the call succeeded), by method, code and field (without the item index).",
		}, []string{"grpc_method", "grpc_code", "field"}),
	}
}

// Collector is the counter, for the server's registry.
func (r *ItemRefusals) Collector() prometheus.Collector { return r.refused }

var itemErrorName = (&commonv1.ItemError{}).ProtoReflect().Descriptor().FullName()

// UnaryServerInterceptor counts and logs every ItemError in the response
// of a successful call. Responses without repeated message fields cost a
// look at their descriptor.
func (r *ItemRefusals) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if m, ok := resp.(proto.Message); ok && err == nil {
			r.inspect(ctx, info.FullMethod, m.ProtoReflect())
		}
		return resp, err
	}
}

// inspect finds the ItemErrors one level down: a repeated field of result
// messages, each holding an ItemError field (the batch response shape).
func (r *ItemRefusals) inspect(ctx context.Context, method string, m protoreflect.Message) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !fd.IsList() || fd.Message() == nil || !m.Has(fd) {
			continue
		}
		errField := itemErrorField(fd.Message())
		if errField == nil {
			continue
		}
		list := m.Get(fd).List()
		for j := 0; j < list.Len(); j++ {
			item := list.Get(j).Message()
			if !item.Has(errField) {
				continue
			}
			r.record(ctx, method, j, item.Get(errField).Message().Interface().(*commonv1.ItemError))
		}
	}
}

func itemErrorField(md protoreflect.MessageDescriptor) protoreflect.FieldDescriptor {
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		if fd := fields.Get(i); fd.Message() != nil && fd.Message().FullName() == itemErrorName {
			return fd
		}
	}
	return nil
}

func (r *ItemRefusals) record(ctx context.Context, method string, index int, e *commonv1.ItemError) {
	code := codes.Code(e.GetCode())
	var fields []string
	for _, fv := range e.GetFieldViolations() {
		name := fieldName(fv.GetField())
		r.refused.WithLabelValues(method, code.String(), name).Inc()
		fields = append(fields, fv.GetField())
	}
	if len(fields) == 0 {
		r.refused.WithLabelValues(method, code.String(), "").Inc()
	}
	level := slog.LevelInfo
	if isServerFault(code) {
		level = slog.LevelWarn
	}
	r.log.Log(ctx, level, "batch item refused", "grpc.method", method, "index", index,
		"grpc.code", code.String(), "fields", strings.Join(fields, ","), "reason", e.GetMessage())
}

// itemIndex matches the item part of a field path: "requests[3]." or
// "items[12].".
var itemIndex = regexp.MustCompile(`^[a-z_]+\[\d+\]\.`)

// fieldName is a violation's field without its item index, a label value
// of bounded cardinality: "requests[3].user_id" is "user_id".
func fieldName(path string) string {
	return itemIndex.ReplaceAllString(path, "")
}
