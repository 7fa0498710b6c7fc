// CoreDNS for the lab: the pinned release (see go.mod) with only the plugins a K3s Corefile and the rendered
// coredns-custom keys use. The `kubernetes` plugin is left out: the lab has no API server; K3s's NodeHosts
// file is served by `hosts` as in a real cluster. `bind` lets the lab's cloud DNS listen on one address.
//
// Build: make coredns (go build -trimpath into .tools/coredns/).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
)

// directives keeps the plugins above in the order of the release's plugin.cfg (the order a request passes
// through them), so a Corefile behaves here exactly as in the full CoreDNS of the same release.
var directives = []string{
	"reload", "bind", "ready", "health", "errors", "log", "loadbalance", "cache", "template", "hosts",
	"loop", "forward",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
