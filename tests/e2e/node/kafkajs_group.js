// kafkajs group consumer driver for tests/e2e/test_kafkajs.py.
//   node kafkajs_group.js <bootstrap> <topic> <group> <limit>
// Subscribes to <topic> in <group> (fromBeginning, autoCommit off), processes records
// until exactly <limit> were processed, commits the offset after the last processed
// record of each partition (consumer.commitOffsets), reads the group's committed offsets
// back with admin.fetchOffsets and disconnects.
// Prints one JSON line prefixed with "RESULT " on stdout; logs go to stderr:
//   {"records":[{partition, offset, key, value, headers}], "committed":{p: offset},
//    "fetched":{p: offset}, "memberAssignment":{...}}  or  {"error": "..."}
'use strict';
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, groupId, limitArg] = process.argv.slice(2);
const limit = parseInt(limitArg, 10);
const TIMEOUT_MS = 40000;

const stderrLogger = () => ({ namespace, level, label, log }) => {
  const { message, ...extra } = log;
  process.stderr.write(`[kafkajs ${label}] ${namespace}: ${message} ${JSON.stringify(extra)}\n`);
};

const kafka = new Kafka({
  clientId: 'strata-e2e-kafkajs-group',
  brokers: [bootstrap],
  logLevel: logLevel.WARN,
  logCreator: stderrLogger,
  retry: { retries: 5, initialRetryTime: 100 },
});

async function run() {
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 200, sessionTimeout: 10000, heartbeatInterval: 1000 });
  const records = [];
  const next = {}; // partition -> offset after the last processed record
  let assignment = null;
  consumer.on(consumer.events.GROUP_JOIN, (e) => { assignment = e.payload.memberAssignment; });
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout: processed ${records.length}/${limit}`)), TIMEOUT_MS);
      consumer.on(consumer.events.CRASH, (e) => { clearTimeout(timer); reject(e.payload.error); });
      consumer.run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          if (records.length >= limit) return;
          const headers = {};
          for (const [k, v] of Object.entries(message.headers || {})) headers[k] = v.toString();
          records.push({ partition, offset: Number(message.offset), key: message.key.toString(), value: message.value.toString(), headers });
          next[partition] = Number(message.offset) + 1;
          if (records.length >= limit) { clearTimeout(timer); resolve(); }
        },
      }).catch(reject);
    });
    await consumer.commitOffsets(Object.entries(next).map(([p, o]) => ({ topic, partition: Number(p), offset: String(o) })));
  } finally {
    await consumer.disconnect();
  }
  const admin = kafka.admin();
  await admin.connect();
  const fetched = {};
  try {
    const res = await admin.fetchOffsets({ groupId, topics: [topic] });
    for (const p of res[0].partitions) fetched[p.partition] = Number(p.offset);
  } finally {
    await admin.disconnect();
  }
  return { records, committed: next, fetched, memberAssignment: assignment };
}

// hard stop: never outlive the pytest-side timeout
setTimeout(() => {
  process.stdout.write('RESULT ' + JSON.stringify({ error: 'kafkajs group: hard timeout after 55s' }) + '\n');
  process.exit(3);
}, 55000).unref();

run().then((result) => {
  process.stdout.write('RESULT ' + JSON.stringify(result) + '\n');
  process.exit(0);
}).catch((e) => {
  process.stderr.write(`FAILED: ${e && e.stack ? e.stack : e}\n`);
  process.stdout.write('RESULT ' + JSON.stringify({ error: String(e && e.message ? e.message : e), type: e && e.type }) + '\n');
  process.exit(1);
});
