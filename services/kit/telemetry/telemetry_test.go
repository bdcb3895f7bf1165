package telemetry_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/platforma/platforma/services/kit/telemetry"
	"github.com/platforma/platforma/services/kit/telemetry/telemetrytest"
)

// The tests here are not parallel: telemetry.Setup sets otel's global
// propagator (and tracer provider), which they check.

func TestSpansAreExportedAndFlushedOnShutdown(t *testing.T) {
	c := telemetrytest.Start(t)
	before := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(before) })

	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": c.Endpoint,
		"OTEL_EXPORTER_OTLP_INSECURE": "true",
	}
	for k, v := range env {
		t.Setenv(k, v) // the OTLP exporter reads the environment itself
	}
	shutdown, err := telemetry.Setup(context.Background(), "oplog", func(k string) string { return env[k] })
	require.NoError(t, err)
	_, span := otel.Tracer("test").Start(context.Background(), "ingest batch")
	span.End()
	// Batched: nothing need have left yet; shutdown flushes.
	require.NoError(t, shutdown(context.Background()))

	assert.Equal(t, []telemetrytest.Span{{Service: "oplog", Name: "ingest batch"}}, c.Spans())
}

func TestNothingIsSetUpWithoutAnEndpoint(t *testing.T) {
	before := otel.GetTracerProvider()
	shutdown, err := telemetry.Setup(context.Background(), "profile", func(string) string { return "" })
	require.NoError(t, err)
	require.NoError(t, shutdown(context.Background()))
	assert.Equal(t, before, otel.GetTracerProvider(), "no provider: spans are not recorded or exported")
	assert.IsType(t, propagation.NewCompositeTextMapPropagator(), otel.GetTextMapPropagator(), "but W3C context still propagates")
	assert.Contains(t, otel.GetTextMapPropagator().Fields(), "traceparent")
}

func TestUnknownProtocolIsRefused(t *testing.T) {
	_, err := telemetry.Setup(context.Background(), "x", func(k string) string {
		return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}[k]
	})
	assert.ErrorContains(t, err, "carrier-pigeon")
}
