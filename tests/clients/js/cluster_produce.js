// An idempotent kafkajs producer for the cluster tests (tests/clients/test_cluster.py):
// sends `${CAUDAL_PREFIX}-${i}` to partition i % $CAUDAL_PARTITIONS of $CAUDAL_TOPIC, one
// at a time with acks=all, for $CAUDAL_DURATION_MS, through whatever the test does to
// the cluster meanwhile. Prints one line per outcome:
//   ACK {"v": value, "p": partition, "o": offset}
//   ERR {"v": value, "error": message}     (not acknowledged: may or may not be in the log)
// then DONE, and exits 0; exits 1 only when it could not run at all.
const { Kafka, logLevel } = require('kafkajs');

const brokers = process.env.CAUDAL_BROKERS.split(',');
const topic = process.env.CAUDAL_TOPIC;
const prefix = process.env.CAUDAL_PREFIX;
const partitions = Number(process.env.CAUDAL_PARTITIONS || 1);
const durationMs = Number(process.env.CAUDAL_DURATION_MS || 10000);

const kafka = new Kafka({
  clientId: 'caudal-cluster-test',
  brokers,
  logLevel: logLevel.NOTHING,
  retry: { initialRetryTime: 100, retries: 30, maxRetryTime: 1000 },
  requestTimeout: 5000,
  connectionTimeout: 2000,
});
const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });

const run = async () => {
  await producer.connect();
  const end = Date.now() + durationMs;
  for (let i = 0; Date.now() < end; i++) {
    const value = `${prefix}-${i}`;
    const partition = i % partitions;
    try {
      const [r] = await producer.send({ topic, acks: -1, messages: [{ value, partition }] });
      console.log('ACK ' + JSON.stringify({ v: value, p: r.partition, o: Number(r.baseOffset) }));
    } catch (e) {
      console.log('ERR ' + JSON.stringify({ v: value, error: String(e && e.message) }));
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  await producer.disconnect();
};

run()
  .then(() => {
    // Writes to a pipe are asynchronous: exit once everything printed is out.
    process.stdout.write('DONE\n', () => process.exit(0));
  })
  .catch((e) => { console.error('FAILED', e); process.exit(1); });
