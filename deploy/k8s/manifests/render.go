// Package manifests renders platforma's kustomizations in-process, decodes
// every object strictly into the typed structs of k8s.io/api (the pinned
// version is the offline schema), and checks them against the policies
// deploy/k8s promises: probes, resources, security contexts, shutdown
// grace, autoscaling, disruption budgets, Services, network policies,
// references to ConfigMaps and Secrets, and environment variables that
// are real flags of the binaries.
//
// The checks return every problem found, as errors naming the object, so
// that a test can assert both that the real manifests have none and that a
// broken copy of them has the one expected.
package manifests

import (
	"fmt"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Doc is one rendered object as YAML.
type Doc struct {
	// ID names the object for error messages: kind/namespace/name.
	ID   string
	YAML []byte
}

// Render builds the kustomization in dir as `kubectl kustomize dir` does:
// files on disk, loads restricted to the kustomization's root (other
// kustomization directories may still be resources), no plugins.
func Render(dir string) ([]Doc, error) {
	opts := krusty.MakeDefaultOptions()
	// kubectl's default: a file outside the root is refused, so a plain
	// `kubectl apply -k` works without --load-restrictor.
	opts.LoadRestrictions = types.LoadRestrictionsRootOnly
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", dir, err)
	}
	var docs []Doc
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("render %s: %s: %w", dir, r.CurId(), err)
		}
		id := r.GetKind() + "/" + r.GetNamespace() + "/" + r.GetName()
		docs = append(docs, Doc{ID: id, YAML: y})
	}
	return docs, nil
}
