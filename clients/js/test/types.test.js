// The .d.ts is written by hand; this keeps it from drifting from the module.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as sdk from '../notifybridge.js';

test('every export of notifybridge.js is declared in notifybridge.d.ts', () => {
  const dts = readFileSync(new URL('../notifybridge.d.ts', import.meta.url), 'utf8');
  for (const name of Object.keys(sdk)) {
    assert.match(dts, new RegExp(`export declare (function|class|const) ${name}\\b`), `${name} missing from notifybridge.d.ts`);
  }
});
