package oplogclient_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A worker in another repository builds against the SDK and the generated
// contracts as README's "Using the SDK from another repository" says: the
// modules' paths are not fetchable, so its go.mod points them at a
// checkout of this repository with replace directives, all five of them
// (replace directives of a dependency do not apply to its dependents).
func TestAnOutsideModuleBuildsAgainstTheSDK(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	require.NoError(t, err)
	dir := t.TempDir()
	var goMod strings.Builder
	goMod.WriteString("module example.com/worker\n\ngo 1.26.0\n\nrequire (\n\tgithub.com/platforma/platforma/gen v0.0.0\n\tgithub.com/platforma/platforma/services/oplog v0.0.0\n)\n\nreplace (\n")
	for _, m := range []string{"gen", "migrations", "services/kit", "services/profile", "services/oplog"} {
		goMod.WriteString("\tgithub.com/platforma/platforma/" + m + " => " + filepath.Join(root, m) + "\n")
	}
	goMod.WriteString(")\n")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(goMod.String()), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(`package main

import (
	"context"
	"log"
	"time"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/oplog/oplogclient"
)

func main() {
	creds, err := oplogclient.TLSFromFiles("ca.pem", "worker.pem", "worker-key.pem")
	if err != nil {
		log.Fatal(err)
	}
	conn, err := oplogclient.Dial("oplog:50053", creds)
	if err != nil {
		log.Fatal(err)
	}
	logs, err := oplogclient.New(conn, oplogclient.WithSpool("spool", 256<<20))
	if err != nil {
		log.Fatal(err)
	}
	logs.Log(context.Background(), oplogclient.Entry{UserID: "0193a0c2-0000-7000-8000-0000000000aa",
		OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS, Outcome: commonv1.Outcome_OUTCOME_SUCCESS})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = logs.Close(ctx)
}
`), 0o600))
	run := func(args ...string) {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		// Outside this repository's workspace, as the other repository is.
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "go %s:\n%s", strings.Join(args, " "), out)
	}
	run("mod", "tidy")
	run("build", "-o", filepath.Join(dir, "worker"), ".")
	_, err = os.Stat(filepath.Join(dir, "worker"))
	require.NoError(t, err)
}
