"""Wiring: the one place where the notifier's adapters are built (pool, producer, SMTP, templates)."""

from email.utils import parseaddr

from dunning import runtime
from dunning.consumer import ConsumerRunner
from dunning_notifier import optouts
from dunning_notifier.api import ApiDeps, create_app
from dunning_notifier.channels import PROVIDERS, build_channels
from dunning_notifier.dispatcher import Dispatcher
from dunning_notifier.handlers import HANDLERS
from dunning_notifier.inbound import InboundSmtp
from dunning_notifier.rendering import Renderer
from dunning_notifier.settings import Settings
from dunning_notifier.tenant_templates import TenantTemplates
from dunning_notifier.webhooks_sender import WebhookSender


def build_dispatcher(pool, settings: Settings) -> Dispatcher:
    templates = TenantTemplates(pool, ttl_seconds=settings.template_cache_seconds, public_url=settings.public_url)
    renderer = Renderer(
        sender_name=parseaddr(settings.mail_from)[0] or "Accounts Receivable", tenant_templates=templates
    )
    return Dispatcher(pool, settings, build_channels(settings, renderer, pool))


def build_consumer(pool, settings: Settings) -> ConsumerRunner:
    return ConsumerRunner.from_settings(settings, pool, name="notifier", handlers=HANDLERS)


async def bootstrap(settings: Settings) -> runtime.Service:
    pool, producer = await runtime.open_infrastructure(settings)
    workers: list[runtime.Worker] = [build_consumer(pool, settings), runtime.housekeeping_for(settings, pool)]
    dispatcher = build_dispatcher(pool, settings) if settings.dispatcher_enabled else None
    if dispatcher is not None:
        workers.append(dispatcher)
    if settings.inbound_smtp_port:  # inbound.py: replies, DSNs, mailto unsubscribes
        workers.append(InboundSmtp(pool, settings, set(PROVIDERS)))
    optouts.check_settings(settings)
    if settings.webhooks_enabled:
        workers.append(WebhookSender(pool, settings))  # webhooks_sender.py: the event subscriptions' messages
    return runtime.Service(
        settings=settings,
        pool=pool,
        producer=producer,
        app=create_app(
            ApiDeps(pool=pool, settings=settings, counters=dispatcher.counters if dispatcher is not None else None)
        ),
        workers=workers,
        relay=runtime.relay_for(settings, pool, producer),
    )
