// A kafkajs consumer in a group for the cluster tests (tests/clients/test_cluster.py):
// reads $CAUDAL_TOPIC from the beginning while the test kills and pauses nodes, and
// prints one line per record, `REC {"p": partition, "o": offset, "v": value}`, until the
// test stops it (SIGTERM) or $CAUDAL_DEADLINE_MS passes; exits 1 only when it could not
// run at all.
const { Kafka, logLevel } = require('kafkajs');

const kafka = new Kafka({
  clientId: 'caudal-cluster-consumer',
  brokers: process.env.CAUDAL_BROKERS.split(','),
  logLevel: logLevel.NOTHING,
  retry: { initialRetryTime: 100, retries: 50, maxRetryTime: 1000 },
  requestTimeout: 5000,
  connectionTimeout: 2000,
});
const consumer = kafka.consumer({
  groupId: process.env.CAUDAL_GROUP,
  sessionTimeout: 30000,
  heartbeatInterval: 1000,
  // kafkajs keeps asking a dead coordinator until its retries run out, then restarts the
  // consumer, which finds the new one: few retries make that take seconds, not a minute.
  retry: { retries: 8 },
});
const deadlineMs = Number(process.env.CAUDAL_DEADLINE_MS || 150000);

const run = async () => {
  await consumer.connect();
  await consumer.subscribe({ topic: process.env.CAUDAL_TOPIC, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      console.log('REC ' + JSON.stringify({ p: partition, o: Number(message.offset), v: message.value.toString() }));
    },
  });
  await new Promise((resolve) => {
    process.on('SIGTERM', resolve);
    setTimeout(resolve, deadlineMs);
  });
  await consumer.disconnect();
};

run()
  .then(() => {
    // Writes to a pipe are asynchronous: exit once everything printed is out.
    process.stdout.write('DONE\n', () => process.exit(0));
  })
  .catch((e) => { console.error('FAILED', e); process.exit(1); });
