package config

// This file turns a redis_url setting into go-redis universal client
// options. Besides the single-server forms go-redis parses itself
// (redis://, rediss://, unix://) it accepts two multi-host forms:
//
//	redis+sentinel://[[user]:password@]host1:26379,host2:26379/<master-name>[/<db>][?options]
//	redis+cluster://[[user]:password@]host1:7000,host2:7001[?options]
//
// (and rediss+sentinel://, rediss+cluster:// for TLS). The user info is the
// data servers' credentials (master, replicas, cluster nodes); Sentinel's own
// credentials, when it has any, go in the query as sentinel_username and
// sentinel_password. Other query options are go-redis's (dial_timeout=3s, …).
//
// One parser serves both config validation and the node's client, so a URL
// that passes validation is exactly one the node can open.

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisKind is the deployment a URL names.
type RedisKind int

// The deployments a redis_url can name.
const (
	RedisSingle RedisKind = iota
	RedisSentinel
	RedisCluster
)

func (k RedisKind) String() string {
	switch k {
	case RedisSentinel:
		return "sentinel"
	case RedisCluster:
		return "cluster"
	}
	return "single"
}

// RedisURL is a validated redis_url.
type RedisURL struct {
	Kind RedisKind
	// Single: the go-redis options of a single server.
	Single *redis.Options
	// Sentinel: the failover options (master name, sentinel addresses).
	Failover *redis.FailoverOptions
	// Cluster: the cluster options (seed addresses).
	Cluster *redis.ClusterOptions
}

// Parse validates raw and returns its options. Errors never quote the URL,
// which may hold a password.
func ParseRedisURL(raw string) (*RedisURL, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, errors.New("is not a URL (want scheme://…)")
	}
	switch scheme {
	case "redis", "rediss", "unix":
		return parseSingle(raw, scheme)
	case "redis+sentinel", "rediss+sentinel":
		return parseSentinel(strings.TrimSuffix(scheme, "+sentinel"), rest)
	case "redis+cluster", "rediss+cluster":
		return parseCluster(strings.TrimSuffix(scheme, "+cluster"), rest)
	}
	return nil, fmt.Errorf("scheme must be redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://, got %q", scheme+"://")
}

func parseSingle(raw, scheme string) (*RedisURL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("is not a URL: %s", redactErr(err, raw))
	}
	if scheme == "unix" && u.Path == "" {
		return nil, errors.New("needs a socket path, as in unix:///run/redis/redis.sock")
	}
	if scheme != "unix" && u.Host == "" {
		return nil, errors.New("needs a host, as in redis://host:6379/0")
	}
	o, err := redis.ParseURL(raw)
	if err != nil {
		return nil, errors.New(redactErr(err, raw))
	}
	return &RedisURL{Kind: RedisSingle, Single: o}, nil
}

// multi is the shared shape of the multi-host forms: user info, a list of
// host:port, a path and a query.
type multi struct {
	user     *url.Userinfo
	addrs    []string
	path     []string
	query    url.Values
	sentUser string
	sentPass string
}

func splitMulti(rest, example string) (*multi, error) {
	m := &multi{}
	hostsPart, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		hostsPart, tail = rest[:i], rest[i:]
	}
	// The password may hold '@'; the host list cannot, so the last '@' ends the user info.
	if i := strings.LastIndex(hostsPart, "@"); i >= 0 {
		info := hostsPart[:i]
		hostsPart = hostsPart[i+1:]
		name, pass, hasPass := strings.Cut(info, ":")
		var err error
		if name, err = url.PathUnescape(name); err != nil {
			return nil, errors.New("user name is not URL-escaped correctly")
		}
		if hasPass {
			if pass, err = url.PathUnescape(pass); err != nil {
				return nil, errors.New("password is not URL-escaped correctly")
			}
			m.user = url.UserPassword(name, pass)
		} else {
			m.user = url.User(name)
		}
	}
	if hostsPart == "" {
		return nil, fmt.Errorf("needs at least one host:port, as in %s", example)
	}
	for _, h := range strings.Split(hostsPart, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" {
			return nil, fmt.Errorf("host %q: want host:port, as in %s", h, example)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return nil, fmt.Errorf("host %q: bad port", h)
		}
		m.addrs = append(m.addrs, h)
	}
	path, rawQuery, _ := strings.Cut(tail, "?")
	for _, p := range strings.Split(path, "/") {
		if p != "" {
			m.path = append(m.path, p)
		}
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, errors.New("query is not valid")
	}
	for _, k := range []string{"addr", "master_name", "username", "password", "db"} {
		if q.Has(k) {
			return nil, fmt.Errorf("option %s belongs in the URL itself, not in the query", k)
		}
	}
	m.sentUser, m.sentPass = q.Get("sentinel_username"), q.Get("sentinel_password")
	q.Del("sentinel_username")
	q.Del("sentinel_password")
	m.query = q
	return m, nil
}

// goRedisURL rebuilds a single-host URL go-redis's own parsers read for the
// query options, with every further address as an addr= parameter.
func (m *multi) goRedisURL(scheme, path string) string {
	q := url.Values{}
	for k, v := range m.query {
		q[k] = v
	}
	for _, a := range m.addrs[1:] {
		q.Add("addr", a)
	}
	u := url.URL{Scheme: scheme, Host: m.addrs[0], Path: path, RawQuery: q.Encode()}
	return u.String()
}

func parseSentinel(scheme, rest string) (*RedisURL, error) {
	const example = "redis+sentinel://host1:26379,host2:26379/mymaster"
	m, err := splitMulti(rest, example)
	if err != nil {
		return nil, err
	}
	if len(m.path) == 0 || len(m.path) > 2 {
		return nil, fmt.Errorf("needs the master name as the path, as in %s[/db]", example)
	}
	master, err := url.PathUnescape(m.path[0])
	if err != nil || master == "" {
		return nil, errors.New("master name is not valid")
	}
	dbPath := ""
	if len(m.path) == 2 {
		if db, err := strconv.Atoi(m.path[1]); err != nil || db < 0 {
			return nil, fmt.Errorf("database %q: want a number >= 0", m.path[1])
		}
		dbPath = "/" + m.path[1]
	}
	o, err := redis.ParseFailoverURL(m.goRedisURL(scheme, dbPath))
	if err != nil {
		return nil, fmt.Errorf("options: %s", stripPrefix(err))
	}
	o.MasterName = master
	o.SentinelUsername, o.SentinelPassword = m.sentUser, m.sentPass
	o.Username, o.Password = "", ""
	if m.user != nil {
		o.Username = m.user.Username()
		o.Password, _ = m.user.Password()
	}
	return &RedisURL{Kind: RedisSentinel, Failover: o}, nil
}

func parseCluster(scheme, rest string) (*RedisURL, error) {
	const example = "redis+cluster://host1:7000,host2:7001"
	m, err := splitMulti(rest, example)
	if err != nil {
		return nil, err
	}
	if len(m.path) > 0 {
		return nil, fmt.Errorf("takes no path (a cluster has only database 0), as in %s", example)
	}
	if m.sentUser != "" || m.sentPass != "" {
		return nil, errors.New("sentinel_username and sentinel_password apply to redis+sentinel:// only")
	}
	o, err := redis.ParseClusterURL(m.goRedisURL(scheme, ""))
	if err != nil {
		return nil, fmt.Errorf("options: %s", stripPrefix(err))
	}
	o.Username, o.Password = "", ""
	if m.user != nil {
		o.Username = m.user.Username()
		o.Password, _ = m.user.Password()
	}
	return &RedisURL{Kind: RedisCluster, Cluster: o}, nil
}

// Redact hides the password of any accepted form; the user name stays.
func RedactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "[unparseable URL redacted]"
	}
	if !strings.Contains(scheme, "+") {
		u, err := url.Parse(raw)
		if err != nil {
			return "[unparseable URL redacted]"
		}
		return u.Redacted()
	}
	hosts := rest
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		hosts = rest[:i]
	}
	at := strings.LastIndex(hosts, "@")
	if at < 0 {
		return redactQuery(raw)
	}
	info := hosts[:at]
	if name, _, hasPass := strings.Cut(info, ":"); hasPass {
		info = name + ":xxxxx"
	}
	return redactQuery(scheme + "://" + info + rest[at:])
}

// redactQuery hides a sentinel_password given in the query.
func redactQuery(s string) string {
	base, rawQuery, ok := strings.Cut(s, "?")
	if !ok {
		return s
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return base + "?[redacted]"
	}
	if q.Has("sentinel_password") {
		q.Set("sentinel_password", "xxxxx")
	}
	return base + "?" + q.Encode()
}

func redactErr(err error, raw string) string {
	return strings.ReplaceAll(err.Error(), raw, "[redacted]")
}

func stripPrefix(err error) string { return strings.TrimPrefix(err.Error(), "redis: ") }
