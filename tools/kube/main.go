// The lab's Kubernetes control plane: kube-apiserver, kube-controller-manager and kube-scheduler from the
// pinned k8s.io/kubernetes module in one binary, the way K3s ships them.
//
//	kube apiserver [flags]            kube controller-manager [flags]            kube scheduler [flags]
//	kube server [apiserver flags] --- [controller-manager flags] --- [scheduler flags]
//
// `server` runs all three in one process, as K3s's server does: the API server first, then, once it answers
// /readyz, the controller manager and the scheduler. One Go runtime and one copy of the code in memory instead of
// three; the process exits when any of them does.
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"
	_ "time/tzdata"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/cache"
	"k8s.io/component-base/cli"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

var commands = map[string]func() *cobra.Command{
	"apiserver":          apiserver.NewAPIServerCommand,
	"controller-manager": func() *cobra.Command { return controllermanager.NewControllerManagerCommand() },
	"scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
}

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "server" {
		os.Exit(server(os.Args[2:]))
	}
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: kube apiserver|controller-manager|scheduler [flags]\n"+
			"       kube server [apiserver flags] --- [controller-manager flags] --- [scheduler flags]")
		os.Exit(2)
	}
	command := commands[os.Args[1]]()
	command.SetArgs(os.Args[2:])
	os.Exit(cli.Run(command))
}

const (
	startGCPercent = 400
	settle         = 10 * time.Second // after the API server is ready: the controller manager and scheduler have started
)

// server runs the three components in this process and returns when the first of them stops.
func server(args []string) int {
	parts := [][]string{{}}
	for _, a := range args {
		if a == "---" {
			parts = append(parts, []string{})
			continue
		}
		parts[len(parts)-1] = append(parts[len(parts)-1], a)
	}
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "kube server: give the apiserver, controller-manager and scheduler flags, separated by ---")
		return 2
	}
	addr := net.JoinHostPort(flagValue(parts[0], "--bind-address", "127.0.0.1"), flagValue(parts[0], "--secure-port", "6443"))
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged // each component applies the same logging flags
	// Start-up allocates a lot that lives briefly (API definitions, the bootstrap objects): collect less often while
	// the three start (less CPU on a shared machine), then go back to Go's default so the steady state stays small.
	gcPercent := debug.SetGCPercent(startGCPercent)
	done := make(chan int, 3)
	run := func(name string, args []string) {
		command := commands[name]()
		command.SetArgs(args)
		if err := command.ExecuteContext(context.Background()); err != nil {
			fmt.Fprintf(os.Stderr, "kube server: %s: %v\n", name, err)
			done <- 1
			return
		}
		fmt.Fprintf(os.Stderr, "kube server: %s stopped\n", name)
		done <- 0
	}
	apiServer := commands["apiserver"]()
	apiServer.SetArgs(parts[0])
	go func() { done <- cli.Run(apiServer) }()
	if !ready(addr, done) {
		return 1
	}
	time.AfterFunc(settle, func() { debug.SetGCPercent(gcPercent) })
	go run("controller-manager", parts[1])
	go func() {
		if err := runScheduler(parts[2]); err != nil {
			fmt.Fprintf(os.Stderr, "kube server: scheduler: %v\n", err)
		}
		done <- 1
	}()
	return <-done
}

// runScheduler is kube-scheduler's command without its own signal handler (a process may set up only one: the API
// server's) and without applying the logging flags again.
func runScheduler(args []string) error {
	opts := scheduleroptions.NewOptions()
	fs := pflag.NewFlagSet("scheduler", pflag.ContinueOnError)
	for _, f := range opts.Flags.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	name, err := cache.NewInformerName("kube-scheduler")
	if err != nil {
		return err
	}
	opts.InformerName = name
	ctx := context.Background()
	cc, sched, err := scheduler.Setup(ctx, opts)
	if err != nil {
		return err
	}
	return scheduler.Run(ctx, cc, sched)
}

// ready waits until the API server at addr answers /readyz with 200 (anonymous, as every client may ask it); false
// when it stopped first (its exit code stays in done).
func ready(addr string, done chan int) bool {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // this process's own server: only whether it answers
	for {
		select {
		case code := <-done:
			done <- code
			return false
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := client.Get("https://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
	}
}

func flagValue(args []string, name, fallback string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return fallback
}
