// Java kafka-clients 4.x group consumer driver for tests/e2e/test_regex_subscriptions.py.
// Compiled with javac at test time against tests/e2e/.deps/java4/*.jar.
//
//   java StrataRegexE2E <bootstrap> <group> <subscription> <timeout_ms>
//
// <subscription> is one of
//   re2:<regex>     subscribe(new SubscriptionPattern(regex)): KIP-848 broker-side regex
//   java:<regex>    subscribe(java.util.regex.Pattern.compile(regex)): matched by the client
//   names:<t1,t2>   subscribe(List.of(t1, t2))
// with group.protocol=consumer, auto commit off, auto.offset.reset=earliest. It polls
// until stdin says "stop" (or closes), or <timeout_ms> passes, then close()s. Prints one
// JSON object per line on stdout (the test reads them while it runs):
//   {"event":"started","subscription":"...","client_version":"4.1.1"}
//   {"event":"assignment","t_ms":n,"partitions":["topic:p",...],"member_id":"...","epoch":n}
//       whenever assignment() changes (also when it becomes empty)
//   {"event":"record","t_ms":n,"topic":"...","partition":p,"offset":o,"value":"..."}
//   {"event":"error","t_ms":n,"type":"java class","message":"...","causes":[{"type","message"}...]}
//       when subscribe()/poll() throws (exit 1); the stack trace goes to stderr
//   {"event":"closed","t_ms":n,"reason":"stop"|"timeout"}  (exit 0)
// t_ms: milliseconds since subscribe().
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.regex.Pattern;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.SubscriptionPattern;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.utils.AppInfoParser;

public class StrataRegexE2E {
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

    static synchronized void emit(String json) {
        System.out.println(json);
        System.out.flush();
    }

    public static void main(String[] args) {
        String bootstrap = args[0], group = args[1], subscription = args[2];
        long timeoutMs = Long.parseLong(args[3]);
        AtomicBoolean stop = new AtomicBoolean(false);
        Thread stdin = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null && !line.trim().equals("stop")) { }
            } catch (Exception ignored) { }
            stop.set(true);
        });
        stdin.setDaemon(true);
        stdin.start();

        Properties cc = new Properties();
        cc.put("bootstrap.servers", bootstrap);
        cc.put("group.id", group);
        cc.put("group.protocol", "consumer");
        cc.put("client.id", "strata-e2e-java4-regex");
        cc.put("enable.auto.commit", "false");
        cc.put("auto.offset.reset", "earliest");
        cc.put("fetch.max.wait.ms", 100);
        cc.put("key.deserializer", ByteArrayDeserializer.class.getName());
        cc.put("value.deserializer", ByteArrayDeserializer.class.getName());
        emit("{\"event\":\"started\",\"subscription\":" + q(subscription)
             + ",\"client_version\":" + q(AppInfoParser.getVersion()) + "}");
        long t0 = System.currentTimeMillis();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cc)) {
            String kind = subscription.substring(0, subscription.indexOf(':'));
            String arg = subscription.substring(subscription.indexOf(':') + 1);
            switch (kind) {
                case "re2": consumer.subscribe(new SubscriptionPattern(arg)); break;
                case "java": consumer.subscribe(Pattern.compile(arg)); break;
                case "names": consumer.subscribe(Arrays.asList(arg.split(","))); break;
                default: throw new IllegalArgumentException("subscription kind " + kind);
            }
            t0 = System.currentTimeMillis();
            Set<TopicPartition> last = null;
            String reason = "timeout";
            while (System.currentTimeMillis() - t0 < timeoutMs) {
                if (stop.get()) { reason = "stop"; break; }
                var recs = consumer.poll(Duration.ofMillis(200));
                Set<TopicPartition> now = consumer.assignment();
                if (!now.equals(last)) {
                    last = new HashSet<>(now);
                    StringBuilder sb = new StringBuilder();
                    now.stream().map(tp -> tp.topic() + ":" + tp.partition()).sorted()
                        .forEach(s -> sb.append(sb.length() > 0 ? "," : "").append(q(s)));
                    emit("{\"event\":\"assignment\",\"t_ms\":" + (System.currentTimeMillis() - t0)
                         + ",\"partitions\":[" + sb + "],\"member_id\":" + q(consumer.groupMetadata().memberId())
                         + ",\"epoch\":" + consumer.groupMetadata().generationId() + "}");
                }
                for (ConsumerRecord<byte[], byte[]> r : recs) {
                    emit("{\"event\":\"record\",\"t_ms\":" + (System.currentTimeMillis() - t0)
                         + ",\"topic\":" + q(r.topic()) + ",\"partition\":" + r.partition()
                         + ",\"offset\":" + r.offset()
                         + ",\"value\":" + q(r.value() == null ? null : new String(r.value(), StandardCharsets.UTF_8)) + "}");
                }
            }
            emit("{\"event\":\"closed\",\"t_ms\":" + (System.currentTimeMillis() - t0) + ",\"reason\":" + q(reason) + "}");
        } catch (Throwable e) {
            e.printStackTrace();
            StringBuilder causes = new StringBuilder();
            for (Throwable c = e.getCause(); c != null && c != c.getCause(); c = c.getCause())
                causes.append(causes.length() > 0 ? "," : "").append("{\"type\":").append(q(c.getClass().getName()))
                      .append(",\"message\":").append(q(String.valueOf(c.getMessage()))).append('}');
            emit("{\"event\":\"error\",\"t_ms\":" + (System.currentTimeMillis() - t0)
                 + ",\"type\":" + q(e.getClass().getName()) + ",\"message\":" + q(String.valueOf(e.getMessage()))
                 + ",\"causes\":[" + causes + "]}");
            System.exit(1);
        }
        System.exit(0);
    }
}
