"""RabbitMQ topology and the shared machinery of Burrow's queue consumers."""
