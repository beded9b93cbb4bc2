// Package js embeds the browser SDK, so the Go server can serve the very
// file the npm package ships (the demo page imports it): one copy only.
package js

import _ "embed"

// Source is notifybridge.js, the browser SDK.
//
//go:embed notifybridge.js
var Source []byte
