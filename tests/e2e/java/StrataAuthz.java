// Java kafka-clients driver for tests/e2e/test_authz.py (ACL authorization).
// Compiled with javac at test time against tests/e2e/.deps/java/*.jar (3.9.1).
//
//   java StrataAuthz <bootstrap> <topic> <expected> <user>:<password>:<group> ...
//
// One scenario per <user>:<password>:<group>, each in turn: a KafkaConsumer over SASL_PLAINTEXT
// (PLAIN) in group <group> subscribe()s to <topic> and polls until it has read <expected>
// records (then commitSync()) or poll() throws, for at most 30 s.
// Prints one line per scenario: "RESULT {"user":...,"consumed":n,"committed":bool,
// "errors":[class names of the cause chain],"message":...}".
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class StrataAuthz {
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

    public static void main(String[] args) {
        String bootstrap = args[0], topic = args[1];
        int expected = Integer.parseInt(args[2]);
        for (int a = 3; a < args.length; a++) {
            String[] upg = args[a].split(":", 3);
            System.out.println("RESULT " + scenario(bootstrap, topic, expected, upg[0], upg[1], upg[2]));
            System.out.flush();
        }
        System.exit(0);
    }

    static String scenario(String bootstrap, String topic, int expected, String user, String password, String group) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("security.protocol", "SASL_PLAINTEXT");
        p.put("sasl.mechanism", "PLAIN");
        p.put("sasl.jaas.config", "org.apache.kafka.common.security.plain.PlainLoginModule required username=\""
                + user + "\" password=\"" + password + "\";");
        p.put("group.id", group);
        p.put("group.protocol", "classic");
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "earliest");
        p.put("request.timeout.ms", "15000");
        p.put("default.api.timeout.ms", "20000");
        p.put("session.timeout.ms", "10000");
        int consumed = 0;
        boolean committed = false;
        List<String> chain = new ArrayList<>();
        String message = null;
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p, new ByteArrayDeserializer(),
                new ByteArrayDeserializer())) {
            c.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 30000;
            while (consumed < expected && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(300))) {
                    String v = new String(r.value(), StandardCharsets.UTF_8);
                    if (v.startsWith("authz-")) consumed++;
                }
            }
            if (consumed == expected) {
                c.commitSync(Duration.ofSeconds(15));
                committed = true;
            }
        } catch (Throwable e) {
            for (Throwable t = e; t != null && chain.size() < 8; t = t.getCause()) {
                chain.add(t.getClass().getName());
                if (t.getMessage() != null && message == null) message = t.getMessage();
            }
        }
        StringBuilder out = new StringBuilder("{\"user\":").append(q(user)).append(",\"consumed\":").append(consumed)
            .append(",\"committed\":").append(committed).append(",\"errors\":[");
        for (int i = 0; i < chain.size(); i++) out.append(i > 0 ? "," : "").append(q(chain.get(i)));
        return out.append("],\"message\":").append(q(message)).append('}').toString();
    }
}
