

async def test_seeded_agent_restored_from_a_checkpoint_keeps_ids_unique() -> None:
    from nb_sessions.agent import Msg, ScriptedAgent

    first = ScriptedAgent("Friday", seed=5)
    await first(Msg("user", "what is 1+1", "user"))
    again = ScriptedAgent("Friday", seed=5)  # replays the same id sequence from the start
    again.load_state_dict(first.state_dict())
    await again(Msg("user", "what is 2+2", "user"))
    ids = [m.id for m, _ in again.memory.content]
    assert len(ids) == len(set(ids))


async def test_weather_tool_failure_is_reported_and_long_plan_names_cut_at_words() -> None:
    from nb_sessions.agent import Msg, ScriptedAgent

    agent = ScriptedAgent("Friday", seed=1)
    reply = await agent(Msg("user", "weather in   ", "user"))
    assert reply.get_text_content() == "I couldn't get the weather: Error: ValueError: city must not be empty"
    await agent(Msg("user", "plan to write a very long report about the quarterly figures of every region we have", "user"))
    assert agent.plan_notebook is not None and agent.plan_notebook.current_plan is not None
    name = agent.plan_notebook.current_plan.name
    assert len(name) <= 60 and name.endswith("…") and " " in name
