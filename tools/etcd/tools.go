//go:build tools

// The etcd client the backup and restore tests take snapshots with (etcdctl), pinned beside the
// server; scripts/build-control-plane.sh builds it from this module.
package main

import _ "go.etcd.io/etcd/etcdctl/v3"
