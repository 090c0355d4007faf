// Command goro-bench-go runs the Go side of `cargo xtask bench`: the same workloads as the
// Rust goro-bench binary, with the same output, one line per metric:
// `metric NAME VALUE UNIT`. A run that cannot complete prints `failed: REASON` on standard
// error and exits with status 3.
//
// Usage: goro-bench-go WORKLOAD COUNT, where WORKLOAD is yield, spawn, chan, syscall,
// handoff or rss. The xtask sets GOMAXPROCS in the environment.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		usage(fmt.Sprintf("expected 2 arguments, got %d", len(os.Args)-1))
	}
	count, err := strconv.Atoi(strings.ReplaceAll(os.Args[2], "_", ""))
	if err != nil || count < 1 {
		usage(fmt.Sprintf("COUNT %q is not a whole number of at least 1", os.Args[2]))
	}
	switch os.Args[1] {
	case "yield":
		benchYield(count)
	case "spawn":
		benchSpawn(count)
	case "chan":
		benchChan(count)
	case "syscall":
		benchSyscall(count)
	case "handoff":
		benchHandoff(count)
	case "rss":
		benchRSS(count)
	default:
		usage(fmt.Sprintf("unknown workload %q", os.Args[1]))
	}
}

func usage(message string) {
	fmt.Fprintf(os.Stderr, "goro-bench-go: %s\nUsage: goro-bench-go yield|spawn|chan|syscall|handoff|rss COUNT\n", message)
	os.Exit(2)
}

func fail(reason string) {
	fmt.Fprintf(os.Stderr, "failed: %s\n", reason)
	os.Exit(3)
}

func metric(name string, value float64, unit string) {
	fmt.Printf("metric %s %g %s\n", name, value, unit)
}

func nanosPer(name string, elapsed time.Duration, operations int) {
	metric(name, float64(elapsed.Nanoseconds())/float64(operations), "ns")
}

// benchYield: two goroutines call runtime.Gosched count times each.
func benchYield(count int) {
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < count; j++ {
				runtime.Gosched()
			}
		}()
	}
	wg.Wait()
	nanosPer("yield", time.Since(start), 2*count)
}

// benchSpawn: count empty goroutines, joined through a WaitGroup, as Go has no join handle.
func benchSpawn(count int) {
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(count)
	for i := 0; i < count; i++ {
		go wg.Done()
	}
	wg.Wait()
	nanosPer("spawn_join", time.Since(start), count)
}

// benchChan: a round trip over two unbuffered channels, count times.
func benchChan(count int) {
	ping := make(chan int)
	pong := make(chan int)
	start := time.Now()
	go func() {
		for value := range ping {
			pong <- value
		}
		close(pong)
	}()
	for i := 0; i < count; i++ {
		ping <- i
		if <-pong != i {
			fail("chan: the echo returned another value")
		}
	}
	close(ping)
	<-pong
	nanosPer("round_trip", time.Since(start), count)
}

// syscallBlock is how many calls each timed block of benchSyscall makes. The raw and wrapped
// blocks alternate, so that a change of clock speed or of load on the host during the run
// shifts both alike.
const syscallBlock = 10000

// benchSyscall: syscall.Syscall (with entersyscall and exitsyscall) minus syscall.RawSyscall
// (without them) of getppid, in alternating blocks of syscallBlock calls. It reports the
// median over block pairs of the difference per call, and the medians of both figures.
func benchSyscall(count int) {
	blocks := (count + syscallBlock - 1) / syscallBlock
	raw := make([]float64, 0, blocks)
	wrapped := make([]float64, 0, blocks)
	overhead := make([]float64, 0, blocks)
	perCall := func(elapsed time.Duration) float64 {
		return float64(elapsed.Nanoseconds()) / syscallBlock
	}
	for block := 0; block < blocks; block++ {
		start := time.Now()
		for i := 0; i < syscallBlock; i++ {
			syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
		}
		r := perCall(time.Since(start))
		start = time.Now()
		for i := 0; i < syscallBlock; i++ {
			syscall.Syscall(syscall.SYS_GETPPID, 0, 0, 0)
		}
		w := perCall(time.Since(start))
		raw = append(raw, r)
		wrapped = append(wrapped, w)
		overhead = append(overhead, w-r)
	}
	metric("overhead", median(overhead), "ns")
	metric("raw", median(raw), "ns")
	metric("wrapped", median(wrapped), "ns")
}

// median returns the middle value of values (the upper one of the two middle values for an
// even count).
func median(values []float64) float64 {
	sort.Float64s(values)
	return values[len(values)/2]
}

// benchHandoff: each round, goroutine A starts B, which waits to run, and then reads an empty
// pipe with a blocking read(2); B writes the byte that ends the read. The latency is from just
// before A's read to B's first statement. The pipe is made with syscall.Pipe, so its
// descriptors stay blocking and outside the netpoller. One more round runs first and is
// reported on its own as "first": it starts the threads that later rounds reuse.
func benchHandoff(count int) {
	epoch := time.Now()
	latencies := make([]int64, 0, count+1)
	for round := 0; round <= count; round++ {
		var fds [2]int
		if err := syscall.Pipe(fds[:]); err != nil {
			fail("pipe: " + err.Error())
		}
		ran := make(chan int64, 1)
		done := make(chan int64)
		go func() {
			go func() {
				ran <- int64(time.Since(epoch))
				if _, err := syscall.Write(fds[1], []byte{1}); err != nil {
					fail("write: " + err.Error())
				}
			}()
			enter := int64(time.Since(epoch))
			buffer := make([]byte, 1)
			if n, err := syscall.Read(fds[0], buffer); n != 1 || err != nil {
				fail(fmt.Sprintf("read returned %d, %v", n, err))
			}
			done <- (<-ran) - enter
		}()
		latencies = append(latencies, <-done)
		syscall.Close(fds[0])
		syscall.Close(fds[1])
	}
	first := latencies[0]
	latencies = latencies[1:]
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	metric("median", float64(latencies[len(latencies)/2])/1000, "us")
	metric("worst", float64(latencies[len(latencies)-1])/1000, "us")
	metric("first", float64(first)/1000, "us")
}

// benchRSS: count goroutines parked on a channel receive; RSS added per goroutine.
func benchRSS(count int) {
	before := rssBytes()
	var parked int64
	block := make(chan struct{})
	for i := 0; i < count; i++ {
		go func() {
			atomic.AddInt64(&parked, 1)
			<-block
		}()
	}
	for atomic.LoadInt64(&parked) < int64(count) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	added := rssBytes() - before
	metric("per_goroutine", float64(added)/float64(count)/1024, "KiB")
	metric("alive", float64(count), "goroutines")
	os.Exit(0)
}

func rssBytes() int64 {
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		fail("reading /proc/self/statm: " + err.Error())
	}
	fields := strings.Fields(string(statm))
	pages, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		fail("unexpected /proc/self/statm: " + string(statm))
	}
	return pages * int64(os.Getpagesize())
}
