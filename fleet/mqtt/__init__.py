"""The fleet's MQTT side: brokers (Mosquitto started by the fleet, or amqtt in-process), broker
access rules, the bridge that ingests telemetry and presence, and provisioning over MQTT."""
