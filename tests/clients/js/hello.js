// The Node.js example of issue 4 (the kafkajs README's), run against a test broker.
//
// Unchanged except for:
//   - the port: the test broker's, from $CAUDAL_PORT, instead of 9092;
//   - the lines marked `// test:` that print a marker line for pytest, end the process
//     with 0 once the message has arrived in eachMessage, and with 1 on an error or when
//     nothing arrived within $CAUDAL_DEADLINE_MS.
const { Kafka } = require('kafkajs');

const kafka = new Kafka({ clientId: 'my-app', brokers: [`localhost:${process.env.CAUDAL_PORT}`] });
const producer = kafka.producer();
const consumer = kafka.consumer({ groupId: 'my-group' });

let arrived; // test:
const messageArrived = new Promise((resolve) => { arrived = resolve; }); // test:

const run = async () => {
  await producer.connect();
  await producer.send({ topic: 'my-topic', messages: [{ value: 'Hello, Kafka!' }] });
  await producer.disconnect();

  await consumer.connect();
  await consumer.subscribe({ topic: 'my-topic', fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ topic, partition, message }) => {
      console.log({ value: message.value.toString() });
      console.log('RECEIVED ' + JSON.stringify({ topic, partition, offset: message.offset, value: message.value.toString() })); // test:
      arrived(); // test:
    },
  });
};

// test: run the example, wait for its message, leave the group cleanly (which commits).
const deadlineMs = Number(process.env.CAUDAL_DEADLINE_MS || 60000);
const timer = setTimeout(() => { console.error('TIMEOUT: no message within ' + deadlineMs + ' ms'); process.exit(1); }, deadlineMs);
run()
  .then(() => messageArrived)
  .then(() => consumer.disconnect())
  .then(() => { clearTimeout(timer); console.log('DONE'); process.exit(0); })
  .catch((e) => { console.error('FAILED', e); process.exit(1); });
