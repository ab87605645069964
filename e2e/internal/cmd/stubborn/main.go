// Command stubborn is a process group that ignores SIGTERM: it starts a
// copy of itself as a child, prints "started" and waits. The lab's tests
// use it to prove that Proc.Stop SIGKILLs a group that outlives
// StopTimeout, children included.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	signal.Ignore(syscall.SIGTERM)
	if len(os.Args) > 1 && os.Args[1] == "child" {
		// Bounded, so that a test that dies anyway leaves nothing for long.
		time.Sleep(10 * time.Minute)
		return
	}
	child := exec.Command(os.Args[0], "child")
	if err := child.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "stubborn:", err)
		os.Exit(1)
	}
	fmt.Println("started")
	_ = child.Wait()
}
