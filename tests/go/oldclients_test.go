// Sarama, the Go client, pinned to old Kafka releases as many deployments configure it:
// it then sends the request versions of that release without asking ApiVersions
// (CreateTopics v1, DescribeConfigs v0, ...). Run by `make test` (tests/go/run.sh) against
// the broker binary in $CAUDAL_BIN.
package oldclients

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// broker runs caudal on free loopback ports with a temporary data dir until the test ends.
func broker(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("CAUDAL_BIN")
	if bin == "" {
		t.Fatal("CAUDAL_BIN is not set")
	}
	root := os.Getenv("CAUDAL_TMP")
	if root == "" {
		root = os.TempDir()
	}
	dir, err := os.MkdirTemp(root, "go-it-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for attempt := 0; attempt < 5; attempt++ {
		port := freePorts(t, 2)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		logPath := filepath.Join(dir, fmt.Sprintf("broker-%d.log", attempt))
		logFile, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "--data-dir", filepath.Join(dir, fmt.Sprintf("data-%d", attempt)), "--listen", addr,
			"--shards", "2", "--group-initial-rebalance-delay-ms", "0")
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			text, _ := os.ReadFile(logPath)
			if strings.Contains(string(text), "caudal ready") {
				t.Cleanup(func() {
					cmd.Process.Signal(syscall.SIGTERM)
					done := make(chan error, 1)
					go func() { done <- cmd.Wait() }()
					select {
					case <-done:
					case <-time.After(15 * time.Second):
						cmd.Process.Kill()
						<-done
					}
					logFile.Close()
				})
				return addr
			}
			if cmd.ProcessState != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		text, _ := os.ReadFile(logPath)
		if !strings.Contains(string(text), "in use") {
			t.Fatalf("caudal did not start:\n%s", text)
		}
	}
	t.Fatal("caudal did not start: ports taken")
	return ""
}

func freePorts(t *testing.T, n int) int {
	for attempt := 0; attempt < 100; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		held := []net.Listener{l}
		ok := true
		for k := 1; k < n; k++ {
			m, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+k))
			if err != nil {
				ok = false
				break
			}
			held = append(held, m)
		}
		for _, h := range held {
			h.Close()
		}
		if ok {
			return p
		}
	}
	t.Fatal("no consecutive free ports")
	return 0
}

type collector struct {
	want  int
	got   chan string
	ready chan struct{}
}

func (c *collector) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (c *collector) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (c *collector) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		c.got <- string(m.Value)
		s.MarkMessage(m, "")
		s.Commit()
	}
	return nil
}

// consume reads `want` values with a group member, committing as it goes, then stops.
func consume(t *testing.T, cfg *sarama.Config, addr, group, topic string, want int) []string {
	t.Helper()
	g, err := sarama.NewConsumerGroup([]string{addr}, group, cfg)
	if err != nil {
		t.Fatalf("consumer group: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := &collector{want: want, got: make(chan string, want+100)}
	done := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, c); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) && ctx.Err() == nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	var out []string
	timeout := time.After(60 * time.Second)
	for len(out) < want {
		select {
		case v := <-c.got:
			out = append(out, v)
		case err := <-done:
			t.Fatalf("consuming: %v (after %d of %d)", err, len(out), want)
		case <-timeout:
			t.Fatalf("consumed %d of %d in 60 s", len(out), want)
		}
	}
	// Anything beyond `want` that arrives within a second is a duplicate.
	extra := time.After(time.Second)
loop:
	for {
		select {
		case v := <-c.got:
			out = append(out, v)
		case <-extra:
			break loop
		}
	}
	cancel()
	<-done
	if err := g.Close(); err != nil {
		t.Fatalf("closing the group: %v", err)
	}
	return out
}

func TestPinnedOldClientsProduceConsumeCommitAndResume(t *testing.T) {
	addr := broker(t)
	for _, v := range []sarama.KafkaVersion{sarama.V0_11_0_0, sarama.V1_0_0_0} {
		v := v
		t.Run(v.String(), func(t *testing.T) {
			cfg := sarama.NewConfig()
			cfg.Version = v
			cfg.ClientID = "old-" + v.String()
			cfg.Producer.Return.Successes = true
			cfg.Producer.RequiredAcks = sarama.WaitForAll
			cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
			cfg.Consumer.Offsets.AutoCommit.Enable = false
			topic := "old-" + strings.ReplaceAll(v.String(), ".", "-")
			group := topic + "-group"

			admin, err := sarama.NewClusterAdmin([]string{addr}, cfg)
			if err != nil {
				t.Fatalf("admin: %v", err)
			}
			defer admin.Close()
			if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1,
				ConfigEntries: map[string]*string{"retention.ms": strPtr("86400000")}}, false); err != nil {
				t.Fatalf("CreateTopic: %v", err)
			}
			entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
			if err != nil {
				t.Fatalf("DescribeConfig: %v", err)
			}
			found := false
			for _, e := range entries {
				if e.Name == "retention.ms" {
					found = e.Value == "86400000" && !e.Default
				}
			}
			if !found {
				t.Fatalf("retention.ms=86400000 (not default) missing from %+v", entries)
			}

			p, err := sarama.NewSyncProducer([]string{addr}, cfg)
			if err != nil {
				t.Fatalf("producer: %v", err)
			}
			defer p.Close()
			send := func(prefix string, n int) {
				for i := 0; i < n; i++ {
					if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: topic,
						Key: sarama.StringEncoder(fmt.Sprint(i)), Value: sarama.StringEncoder(fmt.Sprintf("%s-%d", prefix, i))}); err != nil {
						t.Fatalf("send: %v", err)
					}
				}
			}
			send("first", 30)
			got := consume(t, cfg, addr, group, topic, 30)
			if len(got) != 30 {
				t.Fatalf("first read: %d values, want 30", len(got))
			}
			send("second", 10)
			again := consume(t, cfg, addr, group, topic, 10)
			if len(again) != 10 {
				t.Fatalf("after resume: %d values, want 10 (duplicates: %v)", len(again), again)
			}
			for _, s := range again {
				if !strings.HasPrefix(s, "second-") {
					t.Fatalf("resumed at the wrong offset: read %q again", s)
				}
			}
			if err := admin.DeleteTopic(topic); err != nil {
				t.Fatalf("DeleteTopic: %v", err)
			}
		})
	}
}

func strPtr(s string) *string { return &s }
