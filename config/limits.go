package config

import "github.com/notifybridge/notifybridge/bridge"

// Limits are the entry limits (max_event_bytes, max_recipients) that ingest,
// the publisher and the demo all check. bridge, the one package of ours that
// config imports, imports nothing of ours.
func (c *Config) Limits() bridge.Limits {
	return bridge.Limits{MaxEventBytes: int(c.MaxEventBytes.Bytes), MaxRecipients: c.MaxRecipients.N}
}
