// kafkajs end to end through a consumer group, driven by test_kafkajs.py:
//
//   1. the admin creates $TOPIC with $PARTITIONS partitions;
//   2. a producer sends $COUNT keyed messages (key `key-<i % KEYS>`, value `<i>`) in
//      sequential sends of $CHUNK messages, acks=-1, kafkajs's default (murmur2)
//      partitioner, and records the (partition, offset) each send reports;
//   3. a consumer in group $GROUP subscribes fromBeginning and records every message
//      delivered to eachMessage; once $COUNT messages have arrived it keeps running for
//      $SETTLE_MS more (so duplicates would show), then disconnects (commit + LeaveGroup).
//
// Writes one JSON document to $OUT: {"acks": [[partition, baseOffset] ...],
// "consumed": [[partition, offset, key, value] ...]} in delivery order. Exit 0 on success.
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

const env = (name, dflt) => (process.env[name] !== undefined ? process.env[name] : dflt);
const PORT = env('CAUDAL_PORT');
const TOPIC = env('TOPIC');
const GROUP = env('GROUP');
const OUT = env('OUT');
const PARTITIONS = Number(env('PARTITIONS', 3));
const COUNT = Number(env('COUNT', 10000));
const KEYS = Number(env('KEYS', 100));
const CHUNK = Number(env('CHUNK', 500));
const SETTLE_MS = Number(env('SETTLE_MS', 1500));
const DEADLINE_MS = Number(env('CAUDAL_DEADLINE_MS', 90000));

const kafka = new Kafka({ clientId: 'caudal-tests-kafkajs', brokers: [`127.0.0.1:${PORT}`], logLevel: logLevel.WARN });

const main = async () => {
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic: TOPIC, numPartitions: PARTITIONS, replicationFactor: 1 }],
    waitForLeaders: true,
  });
  if (!created) throw new Error('createTopics returned false (topic already existed?)');
  const meta = await admin.fetchTopicMetadata({ topics: [TOPIC] });
  const partitions = meta.topics[0].partitions.length;
  if (partitions !== PARTITIONS) throw new Error(`metadata lists ${partitions} partitions, expected ${PARTITIONS}`);
  await admin.disconnect();

  const producer = kafka.producer();
  await producer.connect();
  const acks = [];
  for (let start = 0; start < COUNT; start += CHUNK) {
    const messages = [];
    for (let i = start; i < Math.min(COUNT, start + CHUNK); i++) {
      messages.push({ key: `key-${i % KEYS}`, value: String(i) });
    }
    const meta = await producer.send({ topic: TOPIC, acks: -1, messages });
    for (const m of meta) {
      if (m.errorCode !== 0) throw new Error(`produce error ${m.errorCode} on partition ${m.partition}`);
      acks.push([m.partition, Number(m.baseOffset)]);
    }
  }
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: GROUP });
  const consumed = [];
  let reachedAt = null;
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  await consumer.connect();
  await consumer.subscribe({ topic: TOPIC, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      consumed.push([partition, Number(message.offset), message.key.toString(), message.value.toString()]);
      if (consumed.length >= COUNT && reachedAt === null) {
        reachedAt = Date.now();
        setTimeout(done, SETTLE_MS);
      }
    },
  });
  await finished;
  await consumer.disconnect();
  fs.writeFileSync(OUT, JSON.stringify({ acks, consumed }));
  console.log(`DONE produced=${COUNT} consumed=${consumed.length}`);
};

const timer = setTimeout(() => { console.error(`TIMEOUT after ${DEADLINE_MS} ms`); process.exit(1); }, DEADLINE_MS);
main()
  .then(() => { clearTimeout(timer); process.exit(0); })
  .catch((e) => { console.error('FAILED', e); process.exit(1); });
