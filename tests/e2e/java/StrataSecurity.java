// Java kafka-clients driver for tests/e2e/test_security.py (TLS, SASL/PLAIN, mTLS).
// Compiled with javac at test time against tests/e2e/.deps/java/*.jar (3.9.1).
//
//   java StrataSecurity <client.properties> <topic> <count>
//
// <client.properties> holds bootstrap.servers and the security settings (security.protocol,
// ssl.truststore.type=PEM, ssl.truststore.location, ssl.keystore.*, sasl.mechanism,
// sasl.jaas.config), shared by the admin, producer and consumer. Steps: Admin createTopics
// (2 partitions) and describeCluster (the advertised endpoints), an acks=all producer sends
// <count> keyed records to partition i % 2, a group-less consumer assign()s +
// seekToBeginning() and checks every record.
// Prints one line "RESULT {json}" on stdout: {"ok":true,...} or, for the first exception,
// {"ok":false,"step":...,"errors":[class names of the cause chain],"message":...,"elapsed_ms":...}.
import java.io.FileReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class StrataSecurity {
    static final int PARTS = 2;

    static String q(String s) {
        if (s == null) return "null";
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') sb.append('\\').append(c);
            else if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
            else sb.append(c);
        }
        return sb.append('"').toString();
    }

    static byte[] b(String s) { return s.getBytes(StandardCharsets.UTF_8); }

    static String step = "start";

    public static void main(String[] args) throws Exception {
        Properties base = new Properties();
        try (FileReader r = new FileReader(args[0], StandardCharsets.UTF_8)) { base.load(r); }
        String topic = args[1];
        int count = Integer.parseInt(args[2]);
        long t0 = System.nanoTime();
        StringBuilder out = new StringBuilder("{");
        try {
            run(base, topic, count, out);
            out.append(",\"ok\":true");
        } catch (Throwable e) {
            if (out.length() > 1) out.append(',');
            List<String> chain = new ArrayList<>();
            String message = null;
            for (Throwable c = e; c != null && chain.size() < 8; c = c.getCause()) {
                chain.add(c.getClass().getName());
                if (c.getMessage() != null) message = c.getMessage();
            }
            out.append("\"ok\":false,\"step\":").append(q(step)).append(",\"errors\":[");
            for (int i = 0; i < chain.size(); i++) out.append(i > 0 ? "," : "").append(q(chain.get(i)));
            out.append("],\"message\":").append(q(message));
            e.printStackTrace();
        }
        out.append(",\"elapsed_ms\":").append((System.nanoTime() - t0) / 1_000_000).append('}');
        System.out.println("RESULT " + out);
        System.out.flush();
        System.exit(0);
    }

    static Properties with(Properties base, Object... kv) {
        Properties p = new Properties();
        p.putAll(base);
        for (int i = 0; i < kv.length; i += 2) p.put(kv[i], kv[i + 1]);
        return p;
    }

    static void run(Properties base, String topic, int count, StringBuilder out) throws Exception {
        step = "admin";
        try (Admin admin = Admin.create(with(base, AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 15000,
                AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 20000))) {
            Collection<Node> nodes = admin.describeCluster().nodes().get(20, TimeUnit.SECONDS);
            out.append("\"nodes\":[");
            int i = 0;
            for (Node n : nodes) out.append(i++ > 0 ? "," : "").append(q(n.id() + "@" + n.host() + ":" + n.port()));
            out.append(']');
            step = "createTopics";
            admin.createTopics(List.of(new NewTopic(topic, PARTS, (short) 1))).all().get(20, TimeUnit.SECONDS);
            long deadline = System.currentTimeMillis() + 20000;
            while (true) {
                try {
                    TopicDescription td = admin.describeTopics(List.of(topic)).allTopicNames()
                        .get(20, TimeUnit.SECONDS).get(topic);
                    if (td.partitions().size() == PARTS && td.partitions().stream().allMatch(p -> p.leader() != null))
                        break;
                } catch (java.util.concurrent.ExecutionException e) {
                    if (System.currentTimeMillis() > deadline) throw e;
                }
                if (System.currentTimeMillis() > deadline) throw new IllegalStateException("topic not ready");
                Thread.sleep(100);
            }
        }
        step = "produce";
        int produced = 0;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(with(base, "acks", "all",
                "linger.ms", 5, "delivery.timeout.ms", 30000, "request.timeout.ms", 15000, "max.block.ms", 20000),
                new ByteArraySerializer(), new ByteArraySerializer())) {
            List<java.util.concurrent.Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < count; i++)
                fs.add(producer.send(new ProducerRecord<>(topic, i % PARTS, b("k" + i), b("java-sec-" + i))));
            producer.flush();
            for (var f : fs) { f.get(30, TimeUnit.SECONDS); produced++; }
        }
        out.append(",\"produced\":").append(produced);
        step = "consume";
        List<String> mismatches = new ArrayList<>();
        int consumed = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(with(base, "enable.auto.commit", "false",
                "auto.offset.reset", "earliest", "request.timeout.ms", 15000, "default.api.timeout.ms", 20000),
                new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < PARTS; p++) tps.add(new TopicPartition(topic, p));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long[] next = new long[PARTS];
            long deadline = System.currentTimeMillis() + 30000;
            while (consumed < count && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    int p = r.partition();
                    int i = (int) (r.offset() * PARTS + p);
                    String k = new String(r.key(), StandardCharsets.UTF_8);
                    String v = new String(r.value(), StandardCharsets.UTF_8);
                    if (r.offset() != next[p] || !k.equals("k" + i) || !v.equals("java-sec-" + i))
                        if (mismatches.size() < 10) mismatches.add("p" + p + "@" + r.offset() + " " + k + "=" + v);
                    next[p] = r.offset() + 1;
                    consumed++;
                }
            }
        }
        out.append(",\"consumed\":").append(consumed).append(",\"mismatches\":[");
        for (int i = 0; i < mismatches.size(); i++) out.append(i > 0 ? "," : "").append(q(mismatches.get(i)));
        out.append(']');
        step = "done";
    }
}
