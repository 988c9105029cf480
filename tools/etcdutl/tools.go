//go:build tools

// etcdutl, etcd's offline tool: `etcdutl snapshot restore` turns a snapshot taken with
// `etcdctl snapshot save` into a fresh member's data dir (etcdctl 3.6 no longer restores).
// The backup and restore tests (tests/support/etcd_tools.py) build it from this module, at the
// same etcd version as tools/etcd.
package main

import _ "go.etcd.io/etcd/etcdutl/v3"
