// Command extender-wire checks Gaia's scheduler-extender documents against the upstream Go types.
//
// It reads a JSON array of {"type": NAME, "document": ...} from stdin, decodes each document
// into the k8s.io/kube-scheduler/extender/v1 type NAME with encoding/json and
// DisallowUnknownFields (exactly what kube-scheduler's HTTPExtender does, plus the strictness),
// marshals it back and prints a JSON array of {"document": ...} or {"error": ...}, one per input.
// NAME "Quantity" decodes a k8s.io/apimachinery resource.Quantity and adds its exact decimal
// value, so the Python quantity parser can be checked against the upstream one.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/api/resource"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

type item struct {
	Type     string          `json:"type"`
	Document json.RawMessage `json:"document"`
}

type answer struct {
	Document json.RawMessage `json:"document,omitempty"`
	Decimal  string          `json:"decimal,omitempty"`
	Error    string          `json:"error,omitempty"`
}

func target(name string) (any, error) {
	switch name {
	case "ExtenderArgs":
		return &extenderv1.ExtenderArgs{}, nil
	case "ExtenderFilterResult":
		return &extenderv1.ExtenderFilterResult{}, nil
	case "HostPriorityList":
		return &extenderv1.HostPriorityList{}, nil
	case "ExtenderBindingArgs":
		return &extenderv1.ExtenderBindingArgs{}, nil
	case "ExtenderBindingResult":
		return &extenderv1.ExtenderBindingResult{}, nil
	case "ExtenderPreemptionArgs":
		return &extenderv1.ExtenderPreemptionArgs{}, nil
	case "ExtenderPreemptionResult":
		return &extenderv1.ExtenderPreemptionResult{}, nil
	case "Quantity":
		return &resource.Quantity{}, nil
	}
	return nil, fmt.Errorf("unknown type %q", name)
}

func roundTrip(it item) answer {
	obj, err := target(it.Type)
	if err != nil {
		return answer{Error: err.Error()}
	}
	dec := json.NewDecoder(bytes.NewReader(it.Document))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return answer{Error: err.Error()}
	}
	if dec.More() {
		return answer{Error: "trailing data after the document"}
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return answer{Error: err.Error()}
	}
	result := answer{Document: out}
	if q, ok := obj.(*resource.Quantity); ok {
		result.Decimal = q.AsDec().String()
	}
	return result
}

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var items []item
	if err := json.Unmarshal(input, &items); err != nil {
		fmt.Fprintln(os.Stderr, "input must be a JSON array of {type, document}:", err)
		os.Exit(2)
	}
	answers := make([]answer, 0, len(items))
	for _, it := range items {
		answers = append(answers, roundTrip(it))
	}
	if err := json.NewEncoder(os.Stdout).Encode(answers); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
