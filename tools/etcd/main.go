// Command etcd is upstream etcd's server, built from its published Go module for the test
// control plane (scripts/build-control-plane.sh): the etcd repository's own main module replaces
// its sibling modules with local paths, so it cannot be installed with "go install".
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
