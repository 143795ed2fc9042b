package remotelog

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Format follows RFC 5424 §6: the header fields, SD-PARAM escaping, and the BOM before MSG.
func TestFormat(t *testing.T) {
	at := time.Date(2026, 12, 6, 8, 0, 0, 123456789, time.FixedZone("x", 3600))
	got := string(Format(Message{Facility: FacilityAudit, Severity: SevWarning, Time: at, Hostname: "ca 1", AppName: "enrollsvc",
		MsgID: "audit", SDID: SDID, Params: []Param{{"seq", "7"}, {"bad name=", `a"b\c]d`}}, Msg: "revoked é"}))
	want := "<108>1 2026-12-06T07:00:00.123456Z ca_1 enrollsvc - audit [audit@32473 seq=\"7\" bad_name_=\"a\\\"b\\\\c\\]d\"] \xEF\xBB\xBFrevoked é"
	if got != want {
		t.Fatalf("Format =\n%q\nwant\n%q", got, want)
	}
	if got := string(Format(Message{Facility: FacilityDaemon, Severity: SevInfo, Time: at})); got != "<30>1 2026-12-06T07:00:00.123456Z - - - - -" {
		t.Errorf("empty fields: %q", got)
	}
}

func TestConfigCheck(t *testing.T) {
	for _, c := range []Config{{Address: "nowhere"}, {Address: ":514"}, {Address: "h:0"}, {Address: "h:99999"}, {Address: "h:514", Transport: "smtp"}} {
		if c.Check() == nil {
			t.Errorf("%+v passed Check", c)
		}
	}
	if err := (Config{Address: "h:6514"}).Check(); err != nil {
		t.Error(err)
	}
}

// The tee writes every record locally, and queues for the server only what is not an audit
// event; TCP frames are octet-counted (RFC 6587 §3.4.1).
func TestTeeOverTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(io.LimitReader(c, 4096))
		got <- string(b)
	}()
	var local strings.Builder
	tee := NewTee(slog.NewJSONHandler(&local, nil), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tee.Run(ctx)
	tee.SetSender(NewSender(Config{Address: ln.Addr().String(), Transport: TCP}))
	log := slog.New(tee)
	log.Info("audit event", slog.Group("audit", "event_id", 2101))
	log.Warn("disk filling", "free", 3)
	deadline := time.Now().Add(10 * time.Second)
	for tee.Sent() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	tee.SetSender(nil) // closes the connection: the reader sees EOF
	s := <-got
	n, rest, ok := strings.Cut(s, " ")
	if l, err := strconv.Atoi(n); !ok || err != nil || l != len(rest) {
		t.Fatalf("frame %q is not one octet-counted message", s)
	}
	if !strings.HasPrefix(rest, "<28>1 ") || !strings.Contains(rest, " enrollsvc - log - \xEF\xBB\xBF{") || !strings.Contains(rest, "disk filling") {
		t.Errorf("message %q", rest)
	}
	if strings.Contains(s, "audit event") {
		t.Error("an audit record went to the log stream")
	}
	if !strings.Contains(local.String(), "audit event") || !strings.Contains(local.String(), "disk filling") {
		t.Errorf("local log lacks records: %s", local.String())
	}
}
