"""Every key of the config is honoured (a named test proves it) or refused: none is silently ignored.

The refusals live in one table, ``s3orch.config.support.UNSUPPORTED``. When a feature lands, its row
goes, and this file then demands an entry in HONOURED naming the test that proves the key works.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from s3orch.config import Config, load_config, load_config_from_string
from s3orch.config.support import NOT_SUPPORTED, UNSUPPORTED, covering_row, refusals
from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.store.interface import CleanupItem
from tests.unit.test_config import BASE, DATA, EXAMPLE, EXAMPLE_ENV, ORIGINAL_ENV, merge

REPO = Path(__file__).resolve().parents[2]

GW_CORE = "tests/inproc/test_gateway_core.py"
GW_OPS = "tests/inproc/test_gateway_ops.py"
GW_PROCESS = "tests/integration/test_gateway_core.py"
OPS_PROCESS = "tests/integration/test_gateway_ops.py"
NOTIFY = "tests/integration/test_notifications.py"
PG = "tests/store/test_postgres.py"
TRACING = "tests/integration/test_tracing.py"
CACHE_GW = "tests/integration/test_cache_gateway.py"

ENC = "tests/inproc/test_encryption.py"
CODEC = "tests/unit/test_codec_objects.py"
COMP = "tests/inproc/test_compression.py"
ENC_KEYS = "tests/unit/test_crypto_keys.py"

#: key -> the tests that prove this build honours it ("file::test_name").
HONOURED: dict[str, tuple[str, ...]] = {
    "server.regions": (
        "tests/inproc/test_auth_attacks.py::test_credential_scope_service_and_region_are_checked",
        "tests/unit/test_auth_hardening.py::test_region_must_be_a_configured_one",
    ),
    "server.listen_addr": (f"{GW_PROCESS}::test_health_metrics_and_audit_log",),
    "server.max_object_size": (f"{GW_CORE}::test_entity_too_large_refused_before_body",),
    "server.max_concurrent_requests": (
        "tests/inproc/test_server_limits.py::test_full_admission_pool_answers_503_slowdown_and_health_still_answers",
    ),
    "server.max_concurrent_reads": (
        "tests/unit/test_admission.py::test_split_pools_keep_reads_flowing_when_writes_are_full",
        "tests/unit/test_config.py::test_only_one_split_pool_is_refused_naming_it",
    ),
    "server.max_concurrent_writes": (
        "tests/unit/test_admission.py::test_split_pools_keep_reads_flowing_when_writes_are_full",
        "tests/unit/test_admission_wait.py::test_workers_take_write_slots_up_to_half_and_reads_still_pass_in_split_mode",
    ),
    "server.load_shed_threshold": (
        "tests/unit/test_admission.py::test_shed_request_gets_503_and_counts_in_load_shed_total",
    ),
    "server.admission_wait": (
        "tests/unit/test_admission.py::test_request_over_capacity_gets_503_slowdown_before_100_continue",
        "tests/unit/test_admission_wait.py::test_a_slot_that_frees_within_the_wait_lets_the_waiting_request_through",
        "tests/unit/test_admission_wait.py::test_no_slot_within_the_wait_is_503_slowdown_then",
        "tests/unit/test_admission_wait.py::test_a_client_that_goes_away_while_waiting_leaves_the_queue",
        "tests/integration/test_rate_limit.py::test_admission_wait_holds_a_request_on_a_real_socket_until_a_slot_frees",
    ),
    "server.backend_timeout": ("tests/integration/test_backend_s3.py::test_unresponsive_server_times_out",),
    "server.write_timeout": (
        "tests/unit/test_server_timeouts.py::test_a_client_that_stops_reading_is_aborted_at_write_timeout_and_releases_everything",
        "tests/integration/test_hostile_requests.py::test_a_client_that_stops_reading_is_cut_off_at_write_timeout",
    ),
    "server.max_concurrent_per_credential": (
        "tests/unit/test_admission.py::test_explicit_per_credential_cap_applies_to_bodyless_requests_too",
        "tests/unit/test_admission.py::test_one_credential_over_its_share_gets_503_slowdown_before_100_continue",
    ),
    "server.read_header_timeout": (
        "tests/integration/test_server_limits.py::test_slowloris_headers_are_cut_off_at_read_header_timeout",
    ),
    "server.read_timeout": (
        "tests/unit/test_server_timeouts.py::test_slow_body_gets_408_at_read_timeout_and_is_accounted",
    ),
    "server.idle_timeout": ("tests/unit/test_feature_support.py::test_idle_keep_alive_connections_close_at_idle_timeout",),
    "server.processes": (
        "tests/integration/test_processes.py::test_two_processes_share_the_port_keep_quotas_exact_and_count_in_one_metrics_view",
        "tests/unit/test_processes.py::test_processes_defaults_to_one_and_takes_an_integer_or_auto",
    ),
    "server.backend_http_client": (
        "tests/unit/test_http11_client.py::test_server_backend_http_client_picks_the_backend_agent",
        "tests/unit/test_backend_s3_inmemory.py::test_the_lean_agent_keeps_one_connection_alive_across_requests",
    ),
    "server.shutdown_delay": (
        "tests/unit/test_service_lifecycle.py::test_shutdown_delay_keeps_serving_and_ready_before_the_drain",
    ),
    "server.tls.cert_file": ("tests/integration/test_tls.py::test_crud_over_tls_with_min_version_1_3",),
    "server.tls.key_file": ("tests/integration/test_tls.py::test_crud_over_tls_with_min_version_1_3",),
    "server.tls.min_version": ("tests/integration/test_tls.py::test_crud_over_tls_with_min_version_1_3",),
    "server.tls.client_ca_file": (
        "tests/integration/test_tls.py::test_mtls_refuses_clients_without_a_ca_signed_certificate",
    ),
    "server.log_level": ("tests/unit/test_logging.py::test_log_level_filters_what_is_written",),
    "server.log_format": (
        f"{OPS_PROCESS}::test_logs_are_json_lines_with_component_and_no_secrets",
        f"{OPS_PROCESS}::test_text_logs_carry_the_audit_fields",
    ),
    "server.spool_dir": (f"{GW_OPS}::test_bodies_over_spool_memory_limit_go_to_spool_dir",),
    "server.spool_memory_limit": (f"{GW_OPS}::test_bodies_over_spool_memory_limit_go_to_spool_dir",),
    "server.stream_through_min_size": (
        "tests/unit/test_stream_through.py::test_a_large_put_streams_and_commits_like_a_spooled_one",
        "tests/unit/test_stream_through.py::test_small_bodies_keep_the_spool",
    ),
    "server.virtual_host_suffix": (f"{GW_OPS}::test_virtual_hosted_style_when_suffix_is_set",),
    "server.delete_concurrency": (
        "tests/unit/test_feature_support.py::DeleteConcurrencyTests::test_backend_deletes_run_at_most_delete_concurrency_at_once",
    ),
    "server.allow_sigv2": ("tests/unit/test_sigv2.py::test_sigv2_can_be_disabled",),
    "buckets[].name": (f"{GW_CORE}::test_bucket_isolation",),
    "buckets[].credentials[].access_key_id": (f"{GW_CORE}::test_bucket_isolation",),
    "buckets[].credentials[].secret_access_key": (f"{GW_CORE}::test_bucket_isolation",),
    "buckets[].credentials[].token": (f"{GW_OPS}::test_a_legacy_proxy_token_opens_its_own_bucket_only",),
    "buckets[].max_multipart_uploads": (
        "tests/inproc/test_multipart.py::test_max_multipart_uploads_limits_active_uploads_per_bucket",
    ),
    "database.driver": ("tests/store/test_engines.py::test_the_driver_selects_the_engine_and_its_settings",
                        "tests/store/test_engines.py::test_an_unknown_driver_is_refused_by_every_entry_point"),
    "database.path": ("tests/store/test_sqlite.py::test_an_unopenable_path_is_a_clear_error",),
    "database.host": (f"{PG}::test_settings_from_config_default_to_tls_and_keep_the_password_out_of_repr",),
    "database.port": (f"{PG}::test_settings_from_config_default_to_tls_and_keep_the_password_out_of_repr",),
    "database.database": (f"{PG}::test_settings_from_config_default_to_tls_and_keep_the_password_out_of_repr",),
    "database.user": (f"{PG}::test_a_dsn_wins_over_the_separate_fields",),
    "database.password": (f"{PG}::test_a_dsn_wins_over_the_separate_fields",),
    "database.ssl_mode": (f"{PG}::test_settings_from_config_default_to_tls_and_keep_the_password_out_of_repr",),
    "database.max_conns": (f"{PG}::test_settings_from_config_default_to_tls_and_keep_the_password_out_of_repr",),
    "database.min_conns": (f"{PG}::test_settings_from_config_default_to_tls_and_keep_the_password_out_of_repr",),
    "database.max_conn_lifetime": (f"{PG}::test_connections_older_than_max_conn_lifetime_are_replaced",),
    "database.dsn": (f"{PG}::test_a_dsn_wins_over_the_separate_fields",),
    "database.statement_timeout": (f"{PG}::test_sessions_are_named_and_time_limited",),
    "rate_limit.enabled": (
        "tests/unit/test_rate_limit.py::test_a_burst_beyond_burst_gets_429_slowdown_with_retry_after_before_the_body",
        "tests/unit/test_rate_limit.py::test_off_means_no_limit_and_no_buckets",
        "tests/integration/test_rate_limit.py::test_a_burst_beyond_burst_gets_429_before_the_body_and_xff_from_an_untrusted_peer_is_ignored",
        "tests/unit/test_rate_limit.py::test_a_reload_gives_new_rates_to_new_buckets_and_switches_at_once",
    ),
    "rate_limit.requests_per_sec": (
        "tests/unit/test_rate_limit.py::test_a_bucket_allows_burst_at_once_then_refills_at_the_rate",
        "tests/unit/test_rate_limit.py::test_a_burst_beyond_burst_gets_429_slowdown_with_retry_after_before_the_body",
    ),
    "rate_limit.burst": (
        "tests/unit/test_rate_limit.py::test_a_burst_beyond_burst_gets_429_slowdown_with_retry_after_before_the_body",
        "tests/unit/test_rate_limit.py::test_a_reload_gives_new_rates_to_new_buckets_and_switches_at_once",
    ),
    "rate_limit.cleanup_interval": ("tests/unit/test_rate_limit.py::test_the_sweeper_worker_runs_every_cleanup_interval",),
    "rate_limit.cleanup_max_age": (
        "tests/unit/test_rate_limit.py::test_the_sweeper_worker_runs_every_cleanup_interval",
        "tests/unit/test_rate_limit.py::test_memory_after_a_million_distinct_ips_returns_to_base_after_the_sweep",
    ),
    "rate_limit.trusted_proxies": (
        "tests/unit/test_rate_limit.py::test_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored",
        "tests/unit/test_rate_limit.py::test_client_ip_is_the_rightmost_untrusted_hop_only_behind_a_trusted_proxy",
    ),
    "rate_limit.per_credential": (
        "tests/unit/test_rate_limit.py::test_per_credential_charges_the_access_key_so_tenants_behind_one_nat_do_not_starve",
    ),
    "routing_strategy": (f"{GW_CORE}::test_pack_fills_backends_in_config_order_and_overflows_at_quota",
                         f"{GW_CORE}::test_spread_balances_writes"),
    "backends[].name": (f"{GW_CORE}::test_pack_fills_backends_in_config_order_and_overflows_at_quota",),
    "backends[].endpoint": (f"{GW_PROCESS}::test_backend_stopped_mid_test_new_puts_go_elsewhere",),
    "backends[].bucket": (f"{GW_CORE}::test_pack_fills_backends_in_config_order_and_overflows_at_quota",),
    "backends[].region": (
        "tests/integration/test_real_backends.py::test_gateway_over_seaweedfs_signs_and_survives_restarts",
    ),
    "backends[].credential_source": (
        "tests/integration/test_backend_credentials.py::test_keys_from_the_environment_sign_for_a_signature_checking_backend",
        "tests/integration/test_backend_credentials.py::test_a_web_identity_is_exchanged_with_sts_for_temporary_keys",
        "tests/unit/test_credentials.py::test_environment_keys_come_first",
    ),
    "backends[].access_key_id": (
        "tests/integration/test_real_backends.py::test_wrong_backend_secret_fails_writes_cleanly",
    ),
    "backends[].secret_access_key": (
        "tests/integration/test_real_backends.py::test_wrong_backend_secret_fails_writes_cleanly",
    ),
    "backends[].force_path_style": ("tests/integration/test_backend_s3.py::test_addressing_styles_and_key_encoding",),
    "backends[].unsigned_payload": (
        "tests/integration/test_backend_s3.py::test_signed_payload_and_unsigned_payload_are_both_accepted",
    ),
    # For Google Cloud Storage in s3-orchestrator; this client sends neither flexible checksums nor
    # SDK headers, so true and false both hold.
    "backends[].disable_checksum": (
        "tests/unit/test_credentials.py::test_backend_requests_carry_no_sdk_or_flexible_checksum_headers",
    ),
    "backends[].strip_sdk_headers": (
        "tests/unit/test_credentials.py::test_backend_requests_carry_no_sdk_or_flexible_checksum_headers",
    ),
    "backends[].quota_bytes": (f"{GW_CORE}::test_pack_fills_backends_in_config_order_and_overflows_at_quota",),
    "backends[].max_object_size": (f"{GW_CORE}::test_backend_max_object_size_skips_to_the_next_backend",),
    "telemetry.metrics.enabled": ("tests/unit/test_service_lifecycle.py::test_metrics_served_only_where_configured",),
    "telemetry.metrics.path": ("tests/unit/test_feature_support.py::test_the_metrics_path_is_served_and_reserved_as_configured",),
    "telemetry.metrics.listen": (f"{OPS_PROCESS}::test_metrics_listen_moves_metrics_to_their_own_address",),
    "telemetry.tracing.enabled": (f"{TRACING}::test_a_put_trace_reaches_an_otlp_http_receiver_linked",),
    "telemetry.tracing.endpoint": (
        f"{TRACING}::test_a_put_trace_reaches_an_otlp_http_receiver_linked",
        f"{TRACING}::test_a_put_trace_reaches_an_otlp_grpc_receiver_and_stop_flushes_it",
    ),
    "telemetry.tracing.protocol": (
        f"{TRACING}::test_a_put_trace_reaches_an_otlp_grpc_receiver_and_stop_flushes_it",
        "tests/unit/test_tracing.py::test_protocol_chooses_the_otlp_exporter",
    ),
    "telemetry.tracing.insecure": (
        f"{TRACING}::test_a_put_trace_reaches_an_otlp_grpc_receiver_and_stop_flushes_it",
        "tests/unit/test_tracing.py::test_http_endpoint_becomes_the_otlp_traces_url",
    ),
    "telemetry.tracing.sample_rate": (
        "tests/unit/test_tracing.py::test_provider_samples_parent_based_trace_id_ratio",
        "tests/unit/test_tracing.py::test_rate_zero_drops_new_traces_but_a_sampled_client_trace_is_kept",
    ),
    # The replicator (s3orch.core.replication, s3orch.workers.replicator).
    "replication.factor": (
        "tests/unit/test_replicator.py::test_a_pass_brings_every_extent_to_two_distinct_backends_with_exact_quota",
        "tests/unit/test_replicator.py::test_admin_replicate_is_skipped_with_factor_one",
        "tests/integration/test_replication.py::test_factor_two_reaches_two_backends_and_survives_any_one_stopped",
    ),
    "replication.worker_interval": (
        "tests/unit/test_replicator.py::test_the_worker_runs_every_worker_interval_and_copies_concurrency_extents_at_once",
    ),
    "replication.batch_size": (
        "tests/unit/test_replicator.py::test_the_worker_runs_every_worker_interval_and_copies_concurrency_extents_at_once",
    ),
    "replication.concurrency": (
        "tests/unit/test_replicator.py::test_the_worker_runs_every_worker_interval_and_copies_concurrency_extents_at_once",
    ),
    # Write fan-out (s3orch.core.fanout).
    "write_path.parallel_copies.enabled": (
        "tests/unit/test_fanout.py::test_ack_all_answers_with_every_copy_recorded_and_stored",
        "tests/integration/test_fanout.py::test_ack_all_the_bytes_are_on_two_backends_the_moment_the_put_returns",
    ),
    "replication.ack": (
        "tests/unit/test_fanout.py::test_ack_must_be_first_all_or_a_count_within_the_factor",
        "tests/unit/test_fanout.py::test_ack_first_answers_before_a_slow_copy_which_finishes_in_the_background",
        "tests/unit/test_fanout.py::test_ack_two_of_three_waits_for_two_copies_only",
    ),
    "replication.unhealthy_threshold": (
        "tests/unit/test_replicator.py::test_copies_on_a_backend_unhealthy_past_the_threshold_are_replaced",
    ),
    # Reads across copies (s3orch.core.reads): s3orch's additions.
    "read_path.hedge_after": (
        "tests/unit/test_hedged_reads.py::test_a_hedge_fires_after_hedge_after_and_the_first_headers_win_the_other_get_cancelled",
        "tests/unit/test_hedged_reads.py::test_auto_hedges_at_the_backends_recent_p95_once_it_has_enough_samples",
        "tests/integration/test_hedged_reads.py::test_a_backend_delayed_2s_never_holds_a_get_up",
    ),
    "backends[].read_cost": ("tests/unit/test_hedged_reads.py::test_cost_orders_healthy_copies_and_health_beats_cost",),
    # The rebalancer (s3orch.core.rebalance, s3orch.workers.rebalancer).
    "rebalance.enabled": (
        "tests/unit/test_rebalance.py::test_the_worker_ticks_every_interval_only_when_enabled_and_batch_size_caps_a_pass",
        "tests/unit/test_rebalance.py::test_a_reload_switches_the_rebalancer_on_with_its_new_settings",
        "tests/integration/test_rebalance.py::test_one_spread_pass_brings_an_unbalanced_fleet_within_the_threshold",
    ),
    "rebalance.interval": (
        "tests/unit/test_rebalance.py::test_the_worker_ticks_every_interval_only_when_enabled_and_batch_size_caps_a_pass",
    ),
    "rebalance.batch_size": (
        "tests/unit/test_rebalance.py::test_the_worker_ticks_every_interval_only_when_enabled_and_batch_size_caps_a_pass",
        "tests/unit/test_rebalance_plan.py::test_batch_size_limits_the_plan",
    ),
    "rebalance.strategy": (
        "tests/unit/test_rebalance.py::test_a_spread_pass_evens_the_backends_and_settles_quota_exactly",
        "tests/unit/test_rebalance.py::test_a_pack_pass_fills_the_first_backends_in_config_order",
    ),
    "rebalance.threshold": (
        "tests/unit/test_rebalance.py::test_a_spread_pass_evens_the_backends_and_settles_quota_exactly",
    ),
    "rebalance.concurrency": ("tests/unit/test_rebalance.py::test_moves_run_at_most_concurrency_at_once",),
    "cleanup_queue.concurrency": (
        "tests/unit/test_workers.py::CleanupQueueWorkerTests::test_the_queue_runs_at_most_cleanup_queue_concurrency_deletes_at_once",
    ),
    "cleanup_queue.claim_grace_period": (
        "tests/unit/test_workers.py::BuildTests::test_workers_get_locks_an_owner_and_the_claim_grace_and_locks_close_after_them",
    ),
    "cleanup_queue.multipart_stale_timeout": (
        "tests/inproc/test_multipart.py::test_stale_uploads_are_aborted_and_release_their_bytes",
    ),
    # Webhooks (s3orch.notify, s3orch.workers.notifier).
    "notifications.endpoints[].url": (f"{NOTIFY}::test_object_events_are_delivered_signed_and_filtered",),
    "notifications.endpoints[].events": (
        f"{NOTIFY}::test_object_events_are_delivered_signed_and_filtered",
        "tests/unit/test_notifier.py::test_event_patterns",
    ),
    "notifications.endpoints[].prefix": (
        f"{NOTIFY}::test_object_events_are_delivered_signed_and_filtered",
        "tests/unit/test_notifier.py::test_prefix_filters_data_events_only",
    ),
    "notifications.endpoints[].secret": (
        f"{NOTIFY}::test_object_events_are_delivered_signed_and_filtered",
        "tests/unit/test_notifier.py::test_no_secret_no_signature_header",
    ),
    "notifications.endpoints[].timeout": (
        "tests/unit/test_notifier.py::test_delivery_posts_signed_cloudevents_and_deletes_the_row",
        "tests/unit/test_notifier.py::test_treq_poster_times_out_on_its_reactor",
    ),
    "notifications.endpoints[].max_retries": (
        "tests/unit/test_notifier.py::test_failures_back_off_exponentially_then_drop_with_metric_and_log",
    ),
    "circuit_breaker.failure_threshold": (
        "tests/unit/test_degraded_mode.py::test_failure_threshold_outage_errors_open_it_and_then_the_database_is_not_called",
        "tests/unit/test_degraded_reads.py::test_the_breaker_opens_only_on_outages_and_stays_closed_while_reads_work",
    ),
    "circuit_breaker.open_timeout": (
        "tests/unit/test_degraded_mode.py::test_the_probe_after_open_timeout_closes_it_and_writes_go_on",
        "tests/unit/test_degraded_reads.py::test_an_outage_serves_every_journaled_object_and_refuses_writes_and_lists",
    ),
    "circuit_breaker.cache_ttl": (
        "tests/unit/test_degraded_reads.py::test_a_hot_key_is_answered_from_the_cache_within_cache_ttl",
    ),
    "circuit_breaker.parallel_broadcast": (
        "tests/unit/test_degraded_broadcast.py::test_the_first_copy_to_answer_wins_and_the_others_are_cancelled",
        "tests/unit/test_degraded_reads.py::test_parallel_broadcast_races_copies_only_while_degraded",
    ),
    "circuit_breaker.degraded_broadcast_parallelism": (
        "tests/unit/test_degraded_broadcast.py::test_the_window_caps_opens_in_flight_and_a_failure_starts_the_next_copy",
        "tests/unit/test_degraded_reads.py::test_parallel_broadcast_races_copies_only_while_degraded",
    ),
    # Ours: the location journal that makes every object readable during an outage.
    "circuit_breaker.journal_path": (
        "tests/unit/test_location_journal.py::test_the_default_path_is_next_to_a_sqlite_database_else_in_the_spool_dir",
        "tests/unit/test_degraded_reads.py::test_an_outage_serves_every_journaled_object_and_refuses_writes_and_lists",
    ),
    "circuit_breaker.journal_refresh": (
        "tests/unit/test_degraded_reads.py::test_the_refresh_learns_other_instances_writes_and_deletes",
    ),
    "backend_circuit_breaker.enabled": (
        "tests/integration/test_backend_breakers.py::test_a_refusing_backend_opens_its_breaker_and_the_probe_closes_it",
        "tests/unit/test_backend_breaker.py::test_build_wraps_the_backends_and_adds_the_watchdog_only_when_enabled",
    ),
    "backend_circuit_breaker.failure_threshold": (
        "tests/unit/test_backend_breaker.py::test_opens_after_failure_threshold_consecutive_failures",
    ),
    "backend_circuit_breaker.open_timeout": (
        "tests/unit/test_backend_breaker.py::test_the_probe_waits_open_timeout_plus_a_fresh_jitter_up_to_a_quarter",
    ),
    "usage_flush.interval": ("tests/unit/test_feature_support.py::test_usage_flush_interval_paces_the_quota_gauges",),
    # Monthly usage limits (s3orch.usage) and the adaptive flush.
    "backends[].api_request_limit": (
        "tests/unit/test_usage_limits.py::test_the_call_that_would_cross_the_api_request_limit_is_refused",
        "tests/integration/test_usage_limits.py::test_api_request_limit_on_reads_and_writes",
    ),
    "backends[].egress_byte_limit": (
        "tests/unit/test_usage_limits.py::test_reads_skip_copies_past_the_egress_limit_then_429",
        "tests/integration/test_usage_limits.py::test_egress_limit_on_get_and_copy",
    ),
    "backends[].ingress_byte_limit": (
        "tests/unit/test_usage_limits.py::test_writes_skip_backends_past_the_ingress_limit_then_507",
        "tests/integration/test_usage_limits.py::test_ingress_limit_on_put_and_upload_part",
    ),
    # Shared usage counters (s3orch.usage.shared over s3orch.redis).
    "redis.address": (
        "tests/unit/test_service_tree.py::BuiltTreeTests::test_with_redis_the_probe_runs_in_every_mode_and_the_flush_takes_lock_1007",
        "tests/integration/test_usage_redis.py::test_two_gateways_on_one_redis_stay_within_the_documented_bound",
        "tests/integration/test_usage_redis.py::test_a_gateway_refuses_to_start_when_redis_does_not_answer",
    ),
    "redis.password": (
        "tests/unit/test_redis_resp.py::test_the_client_authenticates_selects_and_reconnects_only_between_commands",
        "tests/unit/test_redis_counters.py::test_from_config_takes_the_original_keys",
    ),
    "redis.key_prefix": (
        "tests/integration/test_usage_redis.py::test_two_gateways_on_one_redis_stay_within_the_documented_bound",
        "tests/unit/test_redis_counters.py::test_from_config_takes_the_original_keys",
    ),
    "redis.failure_threshold": (
        "tests/unit/test_redis_counters.py::test_failures_open_the_breaker_and_counting_goes_on_locally",
        "tests/unit/test_redis_counters.py::test_from_config_takes_the_original_keys",
    ),
    "redis.open_timeout": (
        "tests/unit/test_redis_counters.py::test_the_probe_replays_every_local_delta_in_one_transaction_after_the_open_timeout",
        "tests/integration/test_usage_redis.py::test_redis_stopped_and_restarted_mid_run_loses_and_doubles_no_count",
    ),
    "usage_flush.adaptive_enabled": (
        "tests/unit/test_usage_flush.py::test_adaptive_flush_goes_fast_past_the_threshold_and_back",
    ),
    "usage_flush.adaptive_threshold": (
        "tests/unit/test_usage_flush.py::test_adaptive_flush_goes_fast_past_the_threshold_and_back",
    ),
    "usage_flush.fast_interval": (
        "tests/unit/test_usage_flush.py::test_adaptive_flush_goes_fast_past_the_threshold_and_back",
    ),
    # The admin API's token; admin_key stands in when it is empty.
    "ui.admin_token": (
        "tests/unit/test_admin_api.py::test_every_route_refuses_a_missing_or_wrong_token",
        "tests/unit/test_admin_api.py::test_admin_key_is_the_token_when_admin_token_is_empty",
    ),
    "ui.admin_key": (
        "tests/unit/test_admin_api.py::test_admin_key_is_the_token_when_admin_token_is_empty",
        "tests/unit/test_ui_api.py::test_wrong_password_is_401_with_the_page_and_unknown_key_too",
    ),
    "ui.enabled": ("tests/unit/test_ui_api.py::test_pages_redirect_to_login_and_apis_answer_401_without_a_session",),
    "ui.path": ("tests/unit/test_ui_api.py::test_login_sets_a_signed_httponly_strict_session_and_a_readable_csrf_cookie",),
    "ui.admin_secret": (
        "tests/unit/test_ui_api.py::test_wrong_password_is_401_with_the_page_and_unknown_key_too",
        "tests/unit/test_ui_api.py::test_bcrypt_secret_is_accepted_and_checked",
    ),
    "ui.session_secret": ("tests/unit/test_ui_api.py::test_a_session_is_valid_on_another_instance_sharing_the_secret",),
    "ui.force_secure_cookies": ("tests/unit/test_ui_api.py::test_force_secure_cookies_marks_both_cookies_secure",),
    # true (the default) is what this build does; false is refused.
    "write_path.pending_pattern.enabled": (
        "tests/inproc/test_pending_reaper.py::test_a_put_whose_commit_failed_is_promoted_once_min_age_has_passed",
    ),
    "write_path.pending_pattern.reaper_tick": (
        "tests/unit/test_pending_reaper.py::BuildTests::test_the_reaper_runs_with_the_configured_tick_age_batch_and_the_instances_claims",
    ),
    "write_path.pending_pattern.min_age": (
        "tests/unit/test_pending_reaper.py::BuildTests::test_the_reaper_runs_with_the_configured_tick_age_batch_and_the_instances_claims",
    ),
    # Integrity: read verification, the scrubber, the replicator's source check.
    "integrity.enabled": (
        "tests/unit/test_integrity.py::test_object_scrub_gives_a_verdict_per_copy_and_the_routes_refuse_when_disabled",
    ),
    "integrity.verify_on_read": (
        "tests/unit/test_integrity.py::test_a_corrupt_copy_read_never_completes_a_200_and_the_scrub_that_follows_drops_it",
        "tests/unit/test_integrity.py::test_ranges_and_verification_off_are_not_checked",
        "tests/integration/test_fault_rig.py::test_a_corrupted_backend_answer_never_reaches_a_client_as_a_200",
    ),
    "integrity.verify_on_replicate": (
        "tests/unit/test_integrity.py::test_the_replicator_never_copies_a_source_that_fails_its_digest",
    ),
    "integrity.scrubber_interval": (
        "tests/unit/test_integrity.py::test_a_scheduled_scrub_drops_the_corrupt_copy_and_the_replicator_rebuilds_it",
        "tests/unit/test_integrity.py::test_a_reload_switches_verification_and_the_schedule",
    ),
    "integrity.scrubber_batch_size": (
        "tests/unit/test_integrity.py::test_an_admin_scrub_streams_progress_and_marks_copies_verified",
    ),
    # Lifecycle expiration (s3orch.workers.lifecycle), by prefix and by object tags.
    "lifecycle.rules[].tags": (
        "tests/unit/test_lifecycle.py::test_a_rule_with_tags_expires_only_keys_carrying_all_of_them",
        "tests/inproc/test_object_tagging.py::test_put_with_tagging_header_then_get_head_and_get_tagging",
    ),
    "lifecycle.rules[].prefix": (
        "tests/store/test_contract_lifecycle.py::test_the_prefix_is_matched_against_bucket_slash_key",
        "tests/unit/test_lifecycle.py::test_only_expired_keys_under_a_rules_prefix_are_deleted_through_the_delete_path",
    ),
    "lifecycle.rules[].expiration_days": (
        "tests/unit/test_lifecycle.py::test_only_expired_keys_under_a_rules_prefix_are_deleted_through_the_delete_path",
        "tests/integration/test_lifecycle.py::test_an_expired_object_disappears_after_an_admin_triggered_run",
    ),
    "cache.enabled": (
        "tests/unit/test_cache.py::test_a_disabled_cache_admits_nothing_and_the_enabled_one_serves_hits",
        f"{CACHE_GW}::test_a_300mb_get_with_the_cache_on_keeps_rss_flat_and_metrics_move",
    ),
    "cache.max_size": ("tests/unit/test_cache.py::test_the_byte_budget_evicts_least_recently_used_first",),
    "cache.max_object_size": (
        "tests/unit/test_cache.py::test_admission_is_decided_from_the_size_before_any_byte",
        "tests/unit/test_cache.py::test_sizes_take_binary_suffixes_and_max_object_size_fits_max_size",
    ),
    "cache.ttl": ("tests/unit/test_cache.py::test_an_entry_expires_after_ttl",),
    "reconcile.enabled": ("tests/unit/test_reconcile.py::test_the_worker_ticks_every_interval_only_when_enabled",),
    "reconcile.interval": ("tests/unit/test_reconcile.py::test_the_worker_ticks_every_interval_only_when_enabled",),
    "reconcile.grace_period": (
        "tests/unit/test_reconcile.py::test_a_copy_younger_than_the_grace_period_is_kept_until_it_is_older",
    ),
    "lifecycle.batch_size": (
        "tests/unit/test_lifecycle.py::test_the_admin_route_runs_a_pass_now_with_ndjson_progress",
        "tests/store/test_contract_lifecycle.py::test_pages_are_bounded_and_resume_after_the_last_key_across_buckets",
    ),
    "encryption.enabled": (
        f"{ENC}::test_round_trip_and_backends_hold_ciphertext",
        f"{ENC_KEYS}::test_build_envelope_follows_the_switch_and_the_chunk_size",
    ),
    "encryption.master_key": (f"{ENC_KEYS}::test_inline_master_key_wraps_as_config_0_and_previous_keys_only_unwrap",),
    "encryption.previous_keys": (
        f"{ENC_KEYS}::test_inline_master_key_wraps_as_config_0_and_previous_keys_only_unwrap",
    ),
    "encryption.master_key_file": (f"{ENC_KEYS}::test_master_key_file_is_exactly_32_raw_bytes",),
    "encryption.chunk_size": (
        f"{ENC}::test_round_trip_and_backends_hold_ciphertext",
        f"{ENC_KEYS}::test_build_envelope_follows_the_switch_and_the_chunk_size",
    ),
    "encryption.vault.address": (f"{ENC_KEYS}::test_the_vault_client_gets_the_address_token_and_ca_cert",),
    "encryption.vault.token": (f"{ENC_KEYS}::test_the_vault_client_gets_the_address_token_and_ca_cert",),
    "encryption.vault.ca_cert": (f"{ENC_KEYS}::test_the_vault_client_gets_the_address_token_and_ca_cert",),
    "encryption.vault.token_file": (
        f"{ENC_KEYS}::test_token_file_must_be_0600_or_stricter",
        f"{ENC_KEYS}::test_renewal_every_interval_rereads_the_token_file",
    ),
    "encryption.vault.renew_interval": (f"{ENC_KEYS}::test_renewal_every_interval_rereads_the_token_file",),
    "encryption.vault.key_name": (
        f"{ENC_KEYS}::test_vault_transit_wraps_under_the_key_name_at_the_mount_off_the_reactor",
    ),
    "encryption.vault.mount_path": (
        f"{ENC_KEYS}::test_vault_transit_wraps_under_the_key_name_at_the_mount_off_the_reactor",
        f"{ENC_KEYS}::test_build_envelope_follows_the_switch_and_the_chunk_size",
    ),
    "compression.enabled": (
        f"{CODEC}::test_build_compressor_follows_the_switch_and_every_key",
        f"{COMP}::test_text_is_stored_smaller_and_reads_back",
    ),
    "compression.level": (f"{CODEC}::test_level_and_chunk_size_change_the_stored_form",),
    "compression.chunk_size": (
        f"{CODEC}::test_level_and_chunk_size_change_the_stored_form",
        f"{COMP}::test_ranges_are_byte_exact",
    ),
    "compression.min_size": (f"{CODEC}::test_min_size_and_min_ratio_decide_what_is_stored_as_is",),
    "compression.min_ratio": (
        f"{CODEC}::test_min_size_and_min_ratio_decide_what_is_stored_as_is",
        f"{COMP}::test_random_data_is_stored_as_is",
    ),
    "write_path.pending_pattern.batch_size": (
        "tests/unit/test_pending_reaper.py::BuildTests::test_the_reaper_runs_with_the_configured_tick_age_batch_and_the_instances_claims",
    ),
}

#: For each row of the table: a config fragment that asks for the feature, and the paths refused.
ASKING: dict[str, tuple[dict[str, Any], list[str]]] = {
    "write_path.pending_pattern.enabled": (
        {"write_path": {"pending_pattern": {"enabled": False}}}, ["write_path.pending_pattern.enabled"],
    ),
}


def schema_keys(cls: type[Any] = Config, prefix: str = "") -> list[str]:
    """Every leaf key of the config schema, ``[]`` standing for list entries."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        if not fld.init or not fld.metadata.get("yaml", True):
            continue
        tp = hints[fld.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        path = prefix + fld.name
        if dataclasses.is_dataclass(tp):
            keys += schema_keys(typing.cast(type[Any], tp), path + ".")
        elif typing.get_origin(tp) is tuple and args and dataclasses.is_dataclass(args[0]):
            keys += schema_keys(typing.cast(type[Any], args[0]), path + "[].")
        elif args and dataclasses.is_dataclass(args[0]):  # optional section (server.tls, encryption.vault)
            keys += schema_keys(typing.cast(type[Any], args[0]), path + ".")
        else:
            keys.append(path)
    return keys


def file_keys(node: Any, prefix: str = "") -> set[str]:
    """Every leaf key written in a YAML document, ``[]`` standing for list entries."""
    if isinstance(node, dict):
        keys: set[str] = set()
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and key != "tags":  # lifecycle tags map names to values
                keys |= file_keys(value, path)
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                for item in value:
                    keys |= file_keys(item, path + "[]")
            else:
                keys.add(path)
        return keys
    return set()


def _test_exists(reference: str) -> bool:
    path, _, name = reference.partition("::")
    source = (REPO / path).read_text()
    test = name.split("::")[-1]
    return re.search(rf"^\s*(async )?def {re.escape(test)}\(", source, re.MULTILINE) is not None


def _load(overrides: dict[str, Any]) -> Config:
    return load_config_from_string(yaml.safe_dump(merge(BASE, overrides)), {})


# --- the walk ---------------------------------------------------------------------------------


def test_every_key_of_the_schema_is_honoured_or_refused() -> None:
    unclassified = [key for key in schema_keys() if key not in HONOURED and covering_row(key) is None]
    assert unclassified == []


def test_every_named_proof_is_a_test_that_exists() -> None:
    missing = [ref for refs in HONOURED.values() for ref in refs if not _test_exists(ref)]
    assert missing == []
    assert set(HONOURED) <= set(schema_keys())


def test_every_key_of_the_originals_config_files_is_in_the_schema() -> None:
    documents = [yaml.safe_load((DATA / name).read_text()) for name in ("original_config.yaml", "original_extra_blocks.yaml")]
    written = set().union(*(file_keys(doc) for doc in documents))
    assert written - set(schema_keys()) == set()
    # s3-orchestrator's README example config has a block for every section.
    assert {key.split(".")[0].split("[")[0] for key in written} >= {
        "server", "buckets", "database", "routing_strategy", "backends", "telemetry", "circuit_breaker",
        "backend_circuit_breaker", "rebalance", "replication", "cleanup_queue", "rate_limit", "encryption",
        "integrity", "ui", "usage_flush", "lifecycle", "reconcile", "cache", "notifications", "redis",
    }


def test_the_table_and_the_examples_here_name_the_same_keys() -> None:
    assert [row.key for row in UNSUPPORTED] == list(ASKING)
    for row in UNSUPPORTED:
        keys = schema_keys()
        assert row.key in keys or any(k.startswith(row.key + "[].") for k in keys), row.key
        assert all(any(re.fullmatch(p.replace(".", r"\.").replace("*", ".*").replace("[]", r"\[\]"), k)
                       for k in schema_keys()) for p in row.covers), row.key


@pytest.mark.parametrize("key", list(ASKING))
def test_asking_for_a_missing_feature_is_refused_naming_the_key(key: str) -> None:
    overrides, paths = ASKING[key]
    issues = refusals(_load(overrides))
    assert [issue.path for issue in issues] == paths
    assert all(issue.message.startswith(NOT_SUPPORTED) for issue in issues)


def test_defaults_and_the_packaged_example_ask_for_nothing_missing() -> None:
    assert refusals(_load({})) == []
    assert refusals(load_config(EXAMPLE, EXAMPLE_ENV)) == []


def test_switched_off_features_may_carry_any_settings() -> None:
    config = _load({
        "encryption": {"enabled": False, "chunk_size": "1MiB"},
        "replication": {"factor": 1, "worker_interval": "1m", "concurrency": 50},
        "rebalance": {"enabled": False, "strategy": "spread", "interval": "1h"},
        "telemetry": {"tracing": {"enabled": False, "endpoint": "otel:4317", "sample_rate": 0.1}},
        "rate_limit": {"enabled": False, "burst": 5, "trusted_proxies": ["10.0.0.0/8"]},
        "ui": {"enabled": False, "path": "/dash"},
        "usage_flush": {"adaptive_enabled": False, "fast_interval": "1s"},
        "lifecycle": {"batch_size": 10},
    })
    assert refusals(config) == []


def test_backend_circuit_breakers_are_built_and_load_switched_on() -> None:
    config = _load({"backend_circuit_breaker": {"enabled": True, "failure_threshold": 2, "open_timeout": "30s"}})
    assert refusals(config) == []
    assert (config.backend_circuit_breaker.failure_threshold, config.backend_circuit_breaker.open_timeout) == (2, 30.0)


def test_what_the_originals_readme_config_asks_for_that_this_build_lacks() -> None:
    original = load_config(DATA / "original_config.yaml", ORIGINAL_ENV)
    assert refusals(original) == []  # its lifecycle rules (prefix, expiration_days) are built now
    assert [r.prefix for r in original.lifecycle.rules] == ["tmp/", "uploads/staging/"]
    with_extras = load_config_from_string(
        (DATA / "original_config.yaml").read_text() + (DATA / "original_extra_blocks.yaml").read_text(), ORIGINAL_ENV
    )
    assert {issue.path for issue in refusals(with_extras)} == set()  # every extra block is built


def test_webhook_endpoints_are_built_now_and_accepted() -> None:
    config = _load({"notifications": {"endpoints": [
        {"url": "https://h.example/x", "events": ["s3:*"], "secret": "k", "prefix": "up/"}
    ]}})
    assert refusals(config) == []


def test_the_refusal_line_is_the_one_the_issue_asks_for() -> None:
    (issue,) = refusals(_load({"write_path": {"pending_pattern": {"enabled": False}}}))
    assert str(issue) == (
        "write_path.pending_pattern.enabled: not supported by this build of s3orch (the key is accepted so that"
        " existing files load); the legacy write path (false) is not implemented; remove the key or set true"
    )


# --- proofs for keys no other test covered ---------------------------------------------------


def _build(overrides: dict[str, Any]) -> Any:
    from s3orch.tap import build

    config = _load(merge({"database": {"driver": "sqlite", "path": "/nonexistent/s3orch.db"}}, overrides))
    return build(config, MemoryReactorClock())


def test_usage_flush_interval_paces_the_quota_gauges() -> None:
    assert _build({"usage_flush": {"interval": "7s"}}).getServiceNamed("usage-flush").interval == 7.0


def _s3_frontend(service: Any) -> Any:
    """The S3 front door behind the gateway's S3 listener (a TCPServer: port, site)."""
    return service.getServiceNamed("s3-listener").args[1].early_handler


def test_the_metrics_path_is_served_and_reserved_as_configured() -> None:
    service = _build({"telemetry": {"metrics": {"enabled": True, "path": "/prom"}}})
    frontend = _s3_frontend(service)
    assert not frontend.wants(b"GET", b"/prom", None)  # operational endpoint
    assert frontend.wants(b"GET", b"/metrics", None)  # just a bucket named "metrics" now
    assert not frontend.wants(b"GET", b"/health/ready", None)
    assert not frontend.wants(b"GET", b"/prom?x=1", None) and not frontend.wants(b"GET", b"/health", None)
    assert frontend.wants(b"GET", b"/healthy", None) and frontend.wants(b"GET", b"/promo/k", None)  # buckets
    assert [listener.name for listener in service.listeners] == ["s3-listener"]
    off = _s3_frontend(_build({"telemetry": {"metrics": {"enabled": False}}}))
    assert off.wants(b"GET", b"/metrics", None)
    apart = _build({"telemetry": {"metrics": {"enabled": True, "listen": "127.0.0.1:9091"}}})
    assert _s3_frontend(apart).wants(b"GET", b"/metrics", None)
    assert apart.getServiceNamed("metrics-listener").args[0] == 9091


def test_idle_keep_alive_connections_close_at_idle_timeout() -> None:
    from tests.unit.test_server_timeouts import _connect

    protocol, transport, clock, _ = _connect()  # idle_timeout: 120s
    protocol.dataReceived(b"GET /health HTTP/1.1\r\nHost: gw.test\r\n\r\n")  # type: ignore[attr-defined]
    assert b"200 OK" in transport.value()
    clock.advance(119)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


class DeleteConcurrencyTests(SynchronousTestCase):
    def test_backend_deletes_run_at_most_delete_concurrency_at_once(self) -> None:
        pending: list[Deferred[None]] = []

        class Backend:
            async def delete_object(self, key: str) -> None:
                d: Deferred[None] = Deferred()
                pending.append(d)
                await d

        class Store:
            done: list[int] = []

            async def cleanup_done(self, ids: list[int], now: float) -> None:
                self.done.extend(ids)

        store = Store()
        cleanups = Cleanups(store=store, fleet=BackendFleet([], {"b1": Backend()}),  # type: ignore[arg-type, dict-item]
                            clock=MemoryReactorClock(), concurrency=3)
        items = [CleanupItem(i, "b1", f"k{i}", 1, "delete") for i in range(7)]
        finished = Deferred.fromCoroutine(cleanups.retry(items))
        seen = []
        while pending:
            seen.append(sum(1 for d in pending if not d.called))
            next(d for d in pending if not d.called).callback(None)
            if all(d.called for d in pending):
                break
        self.successResultOf(DeferredList([finished]))
        assert max(seen) == 3 and len(pending) == 7 and sorted(store.done) == list(range(7))
