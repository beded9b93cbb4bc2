package publisher

import (
	"context"

	"github.com/notifybridge/notifybridge/transport/streams"
)

// Cursor is the stream's last generated id, "0-0" when it was never written.
// Read it while rendering a page from the database and hand it to the SDK
// (lastEventId, or ?last_event_id= on the connect): every event appended
// after the read, including those between the render and the connect, is then
// delivered, and none that the page already shows is sent again.
func (p *Publisher) Cursor(ctx context.Context) (string, error) {
	info, err := streams.NewReader(p.client, p.stream).Info(ctx)
	if err != nil {
		return "", err
	}
	if !info.Exists || info.LastGeneratedID == "" {
		return "0-0", nil
	}
	return info.LastGeneratedID, nil
}
