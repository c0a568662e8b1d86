import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { createRootLogger, formatPrettyLine, moduleLogger } from '../../src/kit/log.ts';

function capture(format: 'json' | 'logstash' | 'pretty', debug = '') {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d) => {
    text += d;
  });
  const root = createRootLogger({ level: 'info', format, debug, role: 'api', destination: out });
  return { root, text: () => text };
}

describe('logs', () => {
  it('when LOG_FORMAT=logstash, then lines carry @timestamp, @version, message, level, module and role', () => {
    const { root, text } = capture('logstash');
    moduleLogger(root, 'events').info({ userId: 'user_001' }, 'EVENT_INSERTED');
    const line = JSON.parse(text());
    assert.equal(line.message, 'EVENT_INSERTED');
    assert.equal(line['@version'], '1');
    assert.ok(!Number.isNaN(Date.parse(line['@timestamp'])));
    assert.equal(line.level, 'INFO');
    assert.equal(line.module, 'events');
    assert.equal(line.role, 'api');
    assert.equal(line.userId, 'user_001');
  });

  it('when LOG_FORMAT=pretty, then the line is seed 003s plain form', () => {
    const { root, text } = capture('pretty');
    moduleLogger(root, 'events').info({ userId: 'user_001' }, 'EVENT_INSERTED');
    assert.match(
      text(),
      /^\[\d{4}-\d\d-\d\dT[\d:.]+Z\] INFO \[api:events\] EVENT_INSERTED \| userId="user_001"\n$/,
    );
    assert.equal(
      formatPrettyLine({ level: 50, time: 0, msg: 'X', role: 'r', module: 'm' }),
      '[1970-01-01T00:00:00.000Z] ERROR [r:m] X\n',
    );
  });

  it('when DEBUG=tessera:codes*, then only the codes module logs at debug', () => {
    const { root, text } = capture('json', 'tessera:codes*');
    moduleLogger(root, 'codes').debug('CODES_DEBUG');
    moduleLogger(root, 'events').debug('EVENTS_DEBUG');
    assert.match(text(), /CODES_DEBUG/);
    assert.doesNotMatch(text(), /EVENTS_DEBUG/);
  });
});
