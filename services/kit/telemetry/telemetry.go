// Package telemetry sets up OpenTelemetry tracing from the standard OTEL_*
// environment: W3C trace context propagation always; an SDK tracer
// provider exporting over OTLP only when an endpoint is configured.
//
//	OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  where to send spans
//	OTEL_EXPORTER_OTLP_PROTOCOL  grpc (default here) or http/protobuf
//	OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES  the resource
//	OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG  sampling (read by the SDK)
//	OTEL_SDK_DISABLED=true  no tracing at all
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// Setup installs the global propagator and, when an OTLP endpoint is
// configured, a tracer provider that exports spans in batches. The
// returned function flushes and stops it; call it with a fresh context on
// shutdown. Without an endpoint, spans are not recorded, but trace ids
// arriving with requests still propagate (into logs and stored rows).
func Setup(ctx context.Context, serviceName string, getenv func(string) string) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	noop := func(context.Context) error { return nil }
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") ||
		(getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "") {
		return noop, nil
	}
	var exporter sdktrace.SpanExporter
	switch protocol := firstNonEmpty(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "grpc"); protocol {
	case "grpc":
		exporter, err = otlptracegrpc.New(ctx)
	case "http/protobuf":
		exporter, err = otlptracehttp.New(ctx)
	default:
		return noop, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: want grpc or http/protobuf", protocol)
	}
	if err != nil {
		return noop, fmt.Errorf("otlp exporter: %w", err)
	}
	// The environment (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) wins
	// over the default name.
	res, err := resource.Merge(
		resource.NewSchemaless(semconv.ServiceName(serviceName)),
		resource.Environment(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return noop, fmt.Errorf("otel resource: %w", err)
	}
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	otel.SetTracerProvider(provider)
	return provider.Shutdown, nil
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
