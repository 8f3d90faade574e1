-- Run once by the postgres image when the data directory is created.
CREATE EXTENSION webhook_outbox;
SELECT webhook_outbox.create_endpoint('http://receiver:8000/hooks', 'demo');
SELECT webhook_outbox.emit('demo.hello', '{"hello": "world"}', event_id => 'demo-1');
