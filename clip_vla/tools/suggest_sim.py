"""Does choosing a suggestion work as well as typing it? ``clip-vla suggest --eval-option N``.

On each held-out scene, over the real ROS graph (``SimGraph``: sim + vla_node + driver)::

    reset(seed) ─► ~/suggest ─► suggestion 1 ─► "option 1"            ─► the robot's result  (chosen)
    reset(seed) ─────────────────────────────► suggestion 1's command ─► the robot's result  (typed)

A run succeeds when the skill worked (the simulator's ``success``) on the suggestion's own
object (``details.goal_on``). A suggestion that needs the object in hand ("put the X in the
bowl") is preceded by the typed "pick up the X" in both arms, as a task planner would.
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional, Sequence


def _suggest(graph: Any, timeout: float = 60.0) -> Dict[str, Any]:
    """One ``~/suggest`` round over DDS (the response's JSON; ``{"status": ...}`` when it failed)."""
    from std_srvs.srv import Trigger

    client = graph.driver_node.create_client(Trigger, "clip_vla/suggest")
    try:
        if not client.wait_for_service(timeout_sec=10.0):
            return {"status": "no_service"}
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        response = future.result() if future.done() else None
        return {"status": "timeout"} if response is None else json.loads(response.message)
    finally:
        graph.driver_node.destroy_client(client)


def _outcome(driver: Any, text: str, obj: str) -> Dict[str, Any]:
    outcome = driver.command(text)
    status = outcome.status
    result = outcome.results[-1] if outcome.results else None  # the step the command ended with
    details = (result or {}).get("details") or {}
    ok = bool(result and result.get("success") and details.get("goal_on") == obj)
    return {"command": text, "status": (status or {}).get("status", "timeout"), "success": ok,
            "acted_on": details.get("goal_on"), "reason": (result or {}).get("reason") or (status or {}).get("message")}


def _run(driver: Any, seed: int, text: str, chosen: Dict[str, Any]) -> Dict[str, Any]:
    """Reset to ``seed`` and say ``text`` (after picking the object up when the skill needs it in hand)."""
    driver.reset(seed, "pick")
    if chosen.get("destination"):
        pick = _outcome(driver, f"pick up the {chosen['object']}", chosen["object"])
        if not pick["success"]:
            return {**pick, "command": text, "success": False, "reason": f"the pick before it failed: {pick['reason']}"}
    return _outcome(driver, text, chosen["object"])


def evaluate_option_one(graph: Any, seeds: Sequence[int]) -> Dict[str, Any]:
    """Success of "option 1" and of its command typed, per scene and in total."""
    scenes: List[Dict[str, Any]] = []
    for seed in seeds:
        graph.driver.reset(int(seed), "pick")
        record = _suggest(graph)
        items = record.get("suggestions") or []
        if not items:
            scenes.append({"seed": int(seed), "suggestion": None, "why": record.get("message") or record.get("status")})
            continue
        first = items[0]
        # A reset to the same seed restores the same scene: the list computed above is still its list.
        chosen = _run(graph.driver, int(seed), "option 1", first)
        typed = _run(graph.driver, int(seed), first["command"], first)
        scenes.append({"seed": int(seed), "suggestion": first["command"], "chosen": chosen, "typed": typed})

    def rate(arm: str) -> Optional[float]:
        runs = [s[arm]["success"] for s in scenes if s.get("suggestion")]
        return round(sum(runs) / len(runs), 4) if runs else None

    return {"seeds": f"{min(seeds)}-{max(seeds)}" if seeds else "", "scenes": len(scenes),
            "with_suggestion": sum(1 for s in scenes if s.get("suggestion")),
            "option_1_success": rate("chosen"), "typed_success": rate("typed"),
            "agree": sum(1 for s in scenes if s.get("suggestion") and s["chosen"]["success"] == s["typed"]["success"]),
            "per_scene": scenes}
