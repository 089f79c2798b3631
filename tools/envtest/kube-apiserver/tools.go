//go:build tools

// Package tools records the commands built from this module, so that `go mod tidy`
// keeps its dependencies in go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
