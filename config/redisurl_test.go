package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSentinel(t *testing.T) {
	p, err := ParseRedisURL("redis+sentinel://:s3cr%40t@10.0.0.1:26379,10.0.0.2:26380/mymaster/2?dial_timeout=3s&sentinel_password=sp")
	if err != nil {
		t.Fatal(err)
	}
	o := p.Failover
	if p.Kind != RedisSentinel || o.MasterName != "mymaster" || o.DB != 2 || o.Password != "s3cr@t" ||
		o.SentinelPassword != "sp" || o.DialTimeout != 3*time.Second ||
		!reflect.DeepEqual(o.SentinelAddrs, []string{"10.0.0.1:26379", "10.0.0.2:26380"}) {
		t.Fatalf("parsed %+v", o)
	}
}

func TestParseCluster(t *testing.T) {
	p, err := ParseRedisURL("rediss+cluster://u:pw@a:7000,b:7001,c:7002?max_redirects=5")
	if err != nil {
		t.Fatal(err)
	}
	o := p.Cluster
	if p.Kind != RedisCluster || o.Username != "u" || o.Password != "pw" || o.MaxRedirects != 5 || o.TLSConfig == nil ||
		!reflect.DeepEqual(o.Addrs, []string{"a:7000", "b:7001", "c:7002"}) {
		t.Fatalf("parsed %+v", o)
	}
}

func TestParseSingle(t *testing.T) {
	for _, raw := range []string{"redis://h:6379/1", "rediss://u:p@h:6380", "unix:///run/redis.sock"} {
		p, err := ParseRedisURL(raw)
		if err != nil || p.Kind != RedisSingle || p.Single == nil {
			t.Errorf("%s: %v %+v", raw, err, p)
		}
	}
}

func TestErrorsNeverQuoteThePassword(t *testing.T) {
	for _, raw := range []string{
		"redis+sentinel://:hunter2@h:26379",
		"redis+cluster://:hunter2@h:x",
		"redis+cluster://:hunter2@h:1/0",
		"redis://:hunter2@h:1/x y",
		"redis+sentinel://:hunter2@h:1/m?nope=1",
	} {
		_, err := ParseRedisURL(raw)
		if err == nil {
			t.Errorf("%s: accepted", raw)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error quotes the password: %v", raw, err)
		}
	}
}

func TestRedact(t *testing.T) {
	cases := map[string]string{
		"redis+sentinel://:pw@a:1,b:2/m":               "redis+sentinel://:xxxxx@a:1,b:2/m",
		"redis+cluster://u:p@ss@a:1,b:2":               "redis+cluster://u:xxxxx@a:1,b:2",
		"redis+sentinel://a:1/m?sentinel_password=spw": "redis+sentinel://a:1/m?sentinel_password=xxxxx",
		"redis://u:pw@h:1/0":                           "redis://u:xxxxx@h:1/0",
	}
	for in, want := range cases {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%s) = %s, want %s", in, got, want)
		}
	}
}
