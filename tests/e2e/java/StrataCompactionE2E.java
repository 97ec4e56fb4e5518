// Java kafka-clients driver for tests/e2e/test_compaction.py. Compiled with javac at
// test time against tests/e2e/.deps/java4/*.jar.
//
//   java StrataCompactionE2E produce <bootstrap> <topic> <count> <keys>
//   java StrataCompactionE2E consume <bootstrap> <topic> <max-records>
//
// produce: a default-config producer (idempotence on, acks=all) sends <count> records
// to partition 0 of <topic>; record i has key keyFor(i) (the same formula as
// test_compaction.py's key_index) and value "value-<i>". Every acknowledgement must carry
// offset i (the partition starts empty). Prints "RESULT {json}".
// consume: assign(partition 0) + seekToBeginning, reads up to the end offset (across
// the offset gaps compaction leaves); prints "RESULT {json}" with every record as
// [offset, key, value-or-null] (or only the count when there are more than <max-records>).
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class StrataCompactionE2E {
    static byte[] b(String s) { return s.getBytes(StandardCharsets.UTF_8); }

    /** Key of record i of count over keys: see key_index in test_compaction.py. */
    static int keyFor(long i, long count, int keys) {
        long rounds = (count + keys - 1) / keys;
        int k = (int) (i % keys);
        long round = i / keys;
        long lastRound = (long) k * rounds / keys;
        if (round > lastRound) k = keys - 1 - (int) (i % 7);
        return k;
    }

    static String keyName(int k) { return String.format("key-%05d", k); }

    static String q(String s) {
        if (s == null) return "null";
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') sb.append('\\').append(c);
            else if (c < 0x20 || c > 0x7e) sb.append(String.format("\\u%04x", (int) c));
            else sb.append(c);
        }
        return sb.append('"').toString();
    }

    public static void main(String[] args) throws Exception {
        String mode = args[0], bootstrap = args[1], topic = args[2];
        if (mode.equals("produce")) produce(bootstrap, topic, Long.parseLong(args[3]), Integer.parseInt(args[4]));
        else consume(bootstrap, topic, Integer.parseInt(args[3]));
        System.exit(0);
    }

    static void produce(String bootstrap, String topic, long count, int keys) throws Exception {
        Properties pc = new Properties();
        pc.put("bootstrap.servers", bootstrap);
        pc.put("linger.ms", 10);
        pc.put("batch.size", 65536);
        pc.put("buffer.memory", 64L * 1024 * 1024);
        pc.put("key.serializer", ByteArraySerializer.class.getName());
        pc.put("value.serializer", ByteArraySerializer.class.getName());
        AtomicLong acked = new AtomicLong();
        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        List<String> mismatches = Collections.synchronizedList(new ArrayList<>());
        long t0 = System.nanoTime();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pc)) {
            for (long i = 0; i < count; i++) {
                final long idx = i;
                producer.send(new ProducerRecord<>(topic, 0, b(keyName(keyFor(i, count, keys))), b("value-" + i)),
                    (md, e) -> {
                        if (e != null) {
                            if (errors.size() < 10) errors.add(idx + ": " + e);
                        } else {
                            acked.incrementAndGet();
                            if (md.offset() != idx && mismatches.size() < 10)
                                mismatches.add("record " + idx + " acked at offset " + md.offset());
                        }
                    });
            }
            producer.flush();
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        StringBuilder out = new StringBuilder("{\"produced\":").append(count)
            .append(",\"acked\":").append(acked.get())
            .append(",\"seconds\":").append(String.format(Locale.ROOT, "%.2f", secs))
            .append(",\"errors\":[");
        synchronized (errors) {
            for (int k = 0; k < errors.size(); k++) out.append(k > 0 ? "," : "").append(q(errors.get(k)));
        }
        out.append("],\"offset_mismatches\":[");
        synchronized (mismatches) {
            for (int k = 0; k < mismatches.size(); k++) out.append(k > 0 ? "," : "").append(q(mismatches.get(k)));
        }
        out.append("]}");
        System.out.println("RESULT " + out);
    }

    static void consume(String bootstrap, String topic, int max) throws Exception {
        Properties cc = new Properties();
        cc.put("bootstrap.servers", bootstrap);
        cc.put("enable.auto.commit", "false");
        cc.put("fetch.max.wait.ms", 100);
        cc.put("max.poll.records", 5000);
        cc.put("key.deserializer", ByteArrayDeserializer.class.getName());
        cc.put("value.deserializer", ByteArrayDeserializer.class.getName());
        TopicPartition tp = new TopicPartition(topic, 0);
        long count = 0, end, t0 = System.nanoTime();
        StringBuilder recs = new StringBuilder();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cc)) {
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            end = consumer.endOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp);
            long deadline = System.currentTimeMillis() + 60000;
            while (consumer.position(tp, Duration.ofSeconds(30)) < end) {
                if (System.currentTimeMillis() > deadline)
                    throw new RuntimeException("read only up to offset " + consumer.position(tp) + " of " + end);
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    if (count < max) {
                        recs.append(count > 0 ? "," : "").append('[').append(r.offset()).append(',')
                            .append(q(r.key() == null ? null : new String(r.key(), StandardCharsets.UTF_8))).append(',')
                            .append(q(r.value() == null ? null : new String(r.value(), StandardCharsets.UTF_8)))
                            .append(']');
                    }
                    count++;
                }
            }
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        System.out.println("RESULT {\"end\":" + end + ",\"count\":" + count
            + ",\"seconds\":" + String.format(Locale.ROOT, "%.2f", secs)
            + ",\"records\":" + (count <= max ? "[" + recs + "]" : "null") + "}");
    }
}
