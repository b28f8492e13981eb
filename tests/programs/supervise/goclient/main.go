// A client for the supervisor tests, built with CGO_ENABLED=0 (static,
// Go's own resolver and raw system calls) and, for the benchmark, with cgo.
//
//	client get URL             print the body of URL
//	client many ADDR N         N connections at once to an echo server, each
//	                           sending a line and reading it back; prints "ok N"
//	client rate ADDR COUNT OCTET
//	                           COUNT sequential connections to bench/target.c
//	                           ('e': one byte back, the last octet of the
//	                           address the target saw, which must be OCTET);
//	                           prints "cps=<connections per second>"
//	client getpid N            N getpid system calls; prints the time taken
//	client udp ADDR PAYLOAD    UDP request/response to an echo server, twice:
//	                           unconnected (WriteToUDP, ReadFromUDP), then
//	                           connected (DialUDP, Write, Read); prints
//	                           "unconnected: reply P from ADDR" and
//	                           "connected: reply P from ADDR" (the peer)
//	client ftpactive ADDR NAME active-mode FTP download of NAME: listens on
//	                           the control connection's own address, port 0,
//	                           sends "PORT" with the listener's address,
//	                           accepts the data connection; prints the file on
//	                           stdout, "advertised ADDR" and "accepted from
//	                           ADDR" on stderr
package main

import (
	"bufio"
	"fmt"
	"strings"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: client get URL | many ADDR N | rate ADDR COUNT OCTET | getpid N | udp ADDR PAYLOAD")
	}
	switch os.Args[1] {
	case "get":
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
		resp, err := client.Get(os.Args[2])
		if err != nil {
			fail("get: %v", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			fail("read: %v", err)
		}
		os.Stdout.Write(body)
	case "many":
		n, _ := strconv.Atoi(os.Args[3])
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		errs := map[string]int{}
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				c, err := net.DialTimeout("tcp", os.Args[2], 60*time.Second)
				if err != nil {
					mu.Lock()
					errs[err.Error()]++
					mu.Unlock()
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				line := fmt.Sprintf("line %d\n", i)
				if _, err := c.Write([]byte(line)); err != nil {
					mu.Lock()
					errs[err.Error()]++
					mu.Unlock()
					return
				}
				got, err := bufio.NewReader(c).ReadString('\n')
				mu.Lock()
				if err == nil && got == line {
					ok++
				} else {
					errs[fmt.Sprintf("echo: %q %v", got, err)]++
				}
				mu.Unlock()
			}(i)
		}
		wg.Wait()
		for e, k := range errs {
			fmt.Fprintf(os.Stderr, "%d x %s\n", k, e)
		}
		fmt.Printf("ok %d\n", ok)
	case "rate":
		count, _ := strconv.Atoi(os.Args[3])
		octet, _ := strconv.Atoi(os.Args[4])
		buf := make([]byte, 1)
		start := time.Now()
		for i := 0; i < count; i++ {
			c, err := net.Dial("tcp", os.Args[2])
			if err != nil {
				fail("dial: %v", err)
			}
			c.Write([]byte("e"))
			if _, err := io.ReadFull(c, buf); err != nil {
				fail("read: %v", err)
			}
			if int(buf[0]) != octet {
				fail("the target saw the connection from 127.0.0.%d, expected 127.0.0.%d", buf[0], octet)
			}
			io.Copy(io.Discard, c) // the target closes first
			c.Close()
		}
		fmt.Printf("cps=%.0f\n", float64(count)/time.Since(start).Seconds())
	case "getpid":
		n, _ := strconv.Atoi(os.Args[2])
		start := time.Now()
		for i := 0; i < n; i++ {
			syscall.RawSyscall(syscall.SYS_GETPID, 0, 0, 0)
		}
		fmt.Printf("ns=%.1f\n", float64(time.Since(start).Nanoseconds())/float64(n))
	case "udp":
		dst, err := net.ResolveUDPAddr("udp", os.Args[2])
		if err != nil {
			fail("resolve: %v", err)
		}
		payload := []byte(os.Args[3])
		buf := make([]byte, 2048)
		pc, err := net.ListenUDP("udp", nil)
		if err != nil {
			fail("listen: %v", err)
		}
		pc.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := pc.WriteToUDP(payload, dst); err != nil {
			fail("unconnected: write: %v", err)
		}
		n, from, err := pc.ReadFromUDP(buf)
		if err != nil {
			fail("unconnected: read: %v", err)
		}
		fmt.Printf("unconnected: reply %s from %s\n", buf[:n], from)
		pc.Close()
		c, err := net.DialUDP("udp", nil, dst)
		if err != nil {
			fail("connected: dial: %v", err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write(payload); err != nil {
			fail("connected: write: %v", err)
		}
		n, err = c.Read(buf)
		if err != nil {
			fail("connected: read: %v", err)
		}
		fmt.Printf("connected: reply %s from %s\n", buf[:n], c.RemoteAddr())
		c.Close()
	case "ftpactive":
		ftpActive(os.Args[2], os.Args[3])
	default:
		fail("unknown mode %s", os.Args[1])
	}
}

// ftpActive downloads name from the FTP server at addr in active mode.
func ftpActive(addr, name string) {
	ctl, err := net.DialTimeout("tcp", addr, 20*time.Second)
	if err != nil {
		fail("connect: %v", err)
	}
	ctl.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(ctl)
	reply := func() string {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				fail("reply: %v", err)
			}
			if len(line) >= 4 && line[3] == ' ' {
				return strings.TrimSpace(line)
			}
		}
	}
	command := func(cmd, want string) {
		fmt.Fprintf(ctl, "%s\r\n", cmd)
		if got := reply(); !strings.HasPrefix(got, want) {
			fail("reply to %s: %s", cmd, got)
		}
	}
	if got := reply(); !strings.HasPrefix(got, "220") {
		fail("banner: %s", got)
	}
	command("USER anonymous", "331")
	command("PASS x", "230")
	command("TYPE I", "200")
	here := ctl.LocalAddr().(*net.TCPAddr)
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: here.IP})
	if err != nil {
		fail("listen: %v", err)
	}
	adv := l.Addr().(*net.TCPAddr)
	fmt.Fprintf(os.Stderr, "advertised %s\n", adv)
	ip := adv.IP.To4()
	if ip == nil {
		fail("not an IPv4 address: %s", adv)
	}
	command(fmt.Sprintf("PORT %d,%d,%d,%d,%d,%d", ip[0], ip[1], ip[2], ip[3], adv.Port>>8, adv.Port&0xff), "200")
	fmt.Fprintf(ctl, "RETR %s\r\n", name)
	l.SetDeadline(time.Now().Add(20 * time.Second))
	data, err := l.AcceptTCP()
	if err != nil {
		fail("accept: %v", err)
	}
	fmt.Fprintf(os.Stderr, "accepted from %s\n", data.RemoteAddr())
	data.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(os.Stdout, data); err != nil {
		fail("read data: %v", err)
	}
	data.Close()
	got := reply()
	if strings.HasPrefix(got, "150") || strings.HasPrefix(got, "125") {
		got = reply()
	}
	if !strings.HasPrefix(got, "226") {
		fail("after RETR: %s", got)
	}
	command("QUIT", "221")
}
