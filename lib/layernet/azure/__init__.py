"""Real-site executors and Azure SDK clients: az command plans, ARM/Arc/AIO/Event Hubs status and evidence."""
