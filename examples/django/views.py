"""Render-time cursor with Django: the page shows the alarms from the database
and connects from the stream position read *before* the query, so an alarm
appended between the query and the WebSocket connect is delivered, not lost.

Wire it with ``path("alarms/", views.alarms)`` and put notify.py
(examples/python) on the path.
"""

from django.shortcuts import render

import notify

from .models import Alarm  # your model


def alarms(request):
    # Read the cursor first: anything appended after it comes over the
    # stream; anything before it is in the query below (at worst both,
    # which the page de-duplicates by entry id if it stores them).
    cursor = notify.current_cursor()
    rows = Alarm.objects.filter(open=True).order_by("-raised_at")[:100]
    return render(request, "alarms.html", {"alarms": rows, "cursor": cursor})
