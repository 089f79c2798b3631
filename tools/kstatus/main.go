// Command kstatus reads Kubernetes objects as JSON (one object, or a List) on stdin and prints,
// for each, one JSON line {"name","status","message"} with the status that
// sigs.k8s.io/cli-utils/pkg/kstatus/status computes: InProgress, Current, Failed, ...
// It is what Flux health checks and `kstatus`-aware tools see.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	raw, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(raw); err != nil {
		return fmt.Errorf("stdin is not a Kubernetes object: %w", err)
	}
	items := []unstructured.Unstructured{*obj}
	if obj.IsList() {
		list, err := obj.ToList()
		if err != nil {
			return fmt.Errorf("reading the list: %w", err)
		}
		items = list.Items
	}
	enc := json.NewEncoder(out)
	for i := range items {
		res, err := status.Compute(&items[i])
		if err != nil {
			return fmt.Errorf("computing the status of %s: %w", items[i].GetName(), err)
		}
		if err := enc.Encode(verdict{Name: items[i].GetName(), Status: res.Status.String(), Message: res.Message}); err != nil {
			return err
		}
	}
	return nil
}
