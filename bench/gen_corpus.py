#!/usr/bin/python3
"""gen_corpus.py: synthetic contact-centre conversations for attune's benchmarks and demos.

Generates chat and voice conversations between customers and agents (sometimes a bot and system
messages) with the behaviours attune measures: agents who acknowledge, validate, apologise,
reassure and take ownership, agents who minimise, deflect or hide behind policy; calm, annoyed and
angry customers who threaten to leave, ask for a manager, complain about effort and repeat
contact, shout, swear or turn sarcastic; and plenty of plain procedural turns (account numbers,
addresses, order questions). Outcomes (resolved, CSAT, NPS, escalated, transferred) correlate with
how the agent behaved, agents get less empathetic late in a shift, and some customers call back
within days about the same problem.

Everything comes from one random.Random(seed), so a seed and -n give the same bytes every time.
Python 3 standard library only.

Formats (--format):
  utterances     one {"speaker","text"} object per line: the scoring benchmark's corpus
  protocol       attuned wire protocol lines: start, utterance (with seq), end (with outcome)
  conversations  one {"type":"conversation", ...} message per line
"""

import argparse
import datetime
import json
import math
import random
import sys

# ---------------------------------------------------------------------------------------------
# Slot fillers
# ---------------------------------------------------------------------------------------------

COMPANIES = ["Northwind Energy", "Brightline Broadband", "Parcelo", "Maple Mobile", "Kestrel Bank",
             "Homestead Insurance", "Bluewater Utilities", "Orbit TV"]
QUEUES = {
    "billing": 0.26, "technical": 0.24, "orders": 0.2, "accounts": 0.14, "retention": 0.08,
    "returns": 0.08,
}
FIRST_NAMES = ["Priya", "James", "Olivia", "Mohammed", "Sophie", "Daniel", "Aisha", "Tom", "Emma",
               "Lucas", "Grace", "Ravi", "Hannah", "Ben", "Chloe", "Kwame", "Zara", "Liam",
               "Fatima", "Jack", "Megan", "Oscar", "Leah", "Callum", "Nadia", "Sam", "Ellie",
               "Tariq", "Isla", "Connor", "Amelia", "Harvey", "Yusuf", "Freya", "Josh", "Maya",
               "Rory", "Ananya", "Ewan", "Lily", "Marcus", "Ruby", "Dev", "Abigail", "Noah",
               "Jess", "Kai", "Siobhan", "Ahmed", "Holly", "Gareth", "Mei", "Owen", "Carla"]
SURNAMES = ["Patel", "Smith", "Jones", "Khan", "Williams", "Brown", "Taylor", "Davies", "Evans",
            "Wilson", "Thomas", "Roberts", "Ali", "Walker", "Wright", "Thompson", "Hughes",
            "Green", "Hall", "Wood", "Clarke", "Jackson", "Turner", "Hill", "Moore", "Okafor",
            "Nowak", "Murphy", "Campbell", "Chen", "Singh", "Kelly", "Mensah", "Lewis"]
STREETS = ["Wellington Road", "Church Lane", "Victoria Street", "Mill Close", "Park Avenue",
           "Station Road", "Queens Drive", "Oak Way", "Highfield Crescent", "Manor Gardens",
           "Kings Terrace", "Riverside Walk", "Elm Grove", "The Green", "Castle Street"]
TOWNS = [("Leeds", "LS"), ("Manchester", "M"), ("Bristol", "BS"), ("Glasgow", "G"),
         ("Cardiff", "CF"), ("Norwich", "NR"), ("York", "YO"), ("Brighton", "BN"),
         ("Leicester", "LE"), ("Sheffield", "S"), ("Exeter", "EX"), ("Derby", "DE")]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
ORDINALS = ["second", "third", "third", "fourth", "fifth", "sixth"]
DURATIONS = ["twenty minutes", "half an hour", "40 minutes", "45 minutes", "an hour",
             "over an hour", "two hours", "ages", "25 minutes", "nearly an hour"]
PRODUCTS = {
    "technical": ["router", "broadband", "wifi", "TV box", "app", "smart meter", "landline",
                  "mobile data", "set-top box", "internet"],
    "orders": ["sofa", "washing machine", "laptop", "parcel", "phone", "mattress", "fridge",
               "headphones", "jacket", "printer", "kettle", "desk chair"],
    "returns": ["jacket", "pair of boots", "blender", "tablet", "dress", "coffee machine",
                "monitor", "vacuum cleaner", "rug", "camera"],
}
COURIERS = ["DPD", "Evri", "Royal Mail", "Yodel", "the courier", "DHL"]
DAYPARTS = ["day", "afternoon", "evening", "weekend", "week"]
BOT_NAMES = ["Ava", "Sky", "Max", "Robin", "Nova"]


def money(rng):
    return "£%d.%02d" % (rng.choice([3, 4, 7, 9, 12, 15, 19, 24, 29, 35, 42, 48, 56, 64, 79, 89,
                                     120, 145, 210, 340]), rng.choice([0, 0, 49, 50, 99, 20, 75, 18]))


def day_ref(rng):
    r = rng.random()
    if r < 0.3:
        return rng.choice(WEEKDAYS)
    if r < 0.5:
        return "last " + rng.choice(WEEKDAYS)
    if r < 0.8:
        d = rng.randint(1, 28)
        suffix = "th" if 10 <= d % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
        return "the %d%s" % (d, suffix)
    return "%d %s" % (rng.randint(1, 28), rng.choice(MONTHS))


def future_day(rng):
    r = rng.random()
    if r < 0.2:
        return "tomorrow"
    if r < 0.6:
        return rng.choice(WEEKDAYS)
    if r < 0.75:
        return "next " + rng.choice(WEEKDAYS)
    d = rng.randint(1, 28)
    suffix = "th" if 10 <= d % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
    return "the %d%s" % (d, suffix)


def account_no(rng):
    return rng.choice(["%08d" % rng.randint(0, 99999999),
                       "%04d %04d %04d" % (rng.randint(0, 9999), rng.randint(0, 9999),
                                           rng.randint(0, 9999)),
                       "AC-%06d" % rng.randint(0, 999999)])


def order_no(rng):
    return rng.choice(["#%07d" % rng.randint(0, 9999999), "ORD-%06d" % rng.randint(0, 999999),
                       "%d-%04d" % (rng.randint(100, 999), rng.randint(0, 9999))])


def postcode(rng, prefix):
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    return "%s%d %d%s%s" % (prefix, rng.randint(1, 29), rng.randint(1, 9), rng.choice(letters),
                            rng.choice(letters))


def address(rng):
    town, prefix = rng.choice(TOWNS)
    return "%d %s, %s %s" % (rng.randint(1, 180), rng.choice(STREETS), town, postcode(rng, prefix))


def email(rng, first, last):
    host = rng.choice(["gmail.com", "outlook.com", "yahoo.co.uk", "icloud.com", "btinternet.com"])
    return rng.choice(["%s.%s@%s", "%s%s@%s", "%s_%s@%s"]) % (first.lower(), last.lower(), host)


def dob(rng):
    return "%d %s %d" % (rng.randint(1, 28), rng.choice(MONTHS), rng.randint(1948, 2004))


# ---------------------------------------------------------------------------------------------
# Phrase banks. "{x}" slots are filled by Filler.fill(); "a|b" alternatives are not used, each
# entry is one realistic phrasing so that the corpus reads like transcripts.
# ---------------------------------------------------------------------------------------------

ISSUES = {
    "billing": [
        ("I've been charged twice for my {month} bill", "the duplicate payment of {amount}"),
        ("there's a charge of {amount} on my account I don't recognise", "that {amount} charge"),
        ("my bill has gone up to {amount} and nobody told me why", "the increase on your bill"),
        ("I was promised a refund of {amount} and it still hasn't arrived", "your refund"),
        ("my direct debit was taken early this month", "the direct debit date"),
        ("I'm being charged a late fee even though I paid on {day}", "the late payment fee"),
        ("you've billed me for a service I cancelled in {month}", "the cancelled service"),
        ("the discount I was given has disappeared from my bill", "your discount"),
    ],
    "technical": [
        ("my {product} keeps dropping out every evening", "the connection drops"),
        ("the {product} hasn't worked since {day}", "the fault on your {product}"),
        ("the {product} is really slow, I'm getting about 2 meg", "the speed issue"),
        ("I can't log in to the {product}, it says my password is wrong", "the login problem"),
        ("the engineer was supposed to come {day} and never turned up", "the missed appointment"),
        ("the {product} has a red light flashing and nothing works", "the fault"),
        ("since the update the {product} keeps crashing", "the crashing"),
        ("I've got no signal at home at all", "the signal problem"),
    ],
    "orders": [
        ("my {product} was meant to arrive {day} and it hasn't come", "your delivery"),
        ("the tracking says delivered but there's no {product} here", "the missing parcel"),
        ("I ordered a {product} and you've sent me the wrong one", "the wrong item"),
        ("the {product} arrived damaged, the box was smashed", "the damaged {product}"),
        ("can I change the delivery date for order {order}", "the delivery date"),
        ("I've had an email saying my order {order} was cancelled", "the cancelled order"),
        ("half of my order is missing, I only got one box", "the missing items"),
    ],
    "accounts": [
        ("I need to update my address, I've moved house", "your address"),
        ("I'm locked out of my online account", "access to your account"),
        ("I want to change the name on the account to my partner's", "the account holder"),
        ("I never got the verification code by text", "the verification code"),
        ("someone has changed the email on my account and it wasn't me", "the account security"),
        ("I need a copy of my statements for {month}", "your statements"),
        ("I'd like to add my son to the account", "adding a user"),
    ],
    "retention": [
        ("my contract ends in {month} and the new price is {amount} a month", "your renewal"),
        ("I've seen a much better deal elsewhere", "your plan price"),
        ("I want to know what it costs to leave early", "the early exit fee"),
        ("my price went up again and I'm not happy about it", "the price rise"),
        ("I'm moving abroad so I need to end my contract", "ending the contract"),
    ],
    "returns": [
        ("I sent the {product} back two weeks ago and still no refund", "your return"),
        ("how do I return a {product} that doesn't fit", "the return"),
        ("the returns label you sent doesn't work", "the returns label"),
        ("you've refused my return for the {product} and I don't know why", "the refused return"),
        ("the {courier} driver never collected the return", "the collection"),
    ],
}

ISSUE_DETAILS = {
    "billing": [
        "I checked my banking app this morning and it's gone out twice.",
        "I've never had a bill that high, we're hardly ever home.",
        "It was supposed to be sorted on the last call.",
        "I pay by direct debit so I don't understand how it's late.",
        "The online account says one thing and the bill says another.",
    ],
    "technical": [
        "It drops every night around eight when we're all streaming.",
        "I've turned it off and on again and checked all the cables.",
        "The lights on the front are all orange and the wifi just vanishes.",
        "I work from home so I really need it working properly.",
        "My neighbours with the same provider have the same problem.",
    ],
    "orders": [
        "The tracking hasn't updated for four days now.",
        "I paid extra for next day delivery and it's been a week.",
        "It was a birthday present so it needed to be here by the weekend.",
        "The driver says he left it in a safe place but it's not here.",
        "I've checked with my neighbours and nobody has it.",
    ],
    "accounts": [
        "I tried the reset link but it says it's expired.",
        "The app keeps telling me my details don't match.",
        "I've had a letter addressed to my old house.",
        "I got an alert about a login from a device I don't own.",
    ],
    "retention": [
        "I've been a customer for eleven years and new customers get it cheaper.",
        "The price has gone up twice this year already.",
        "I don't use half of the channels in the package anyway.",
        "I just want a fair price, that's all.",
    ],
    "returns": [
        "I've got the proof of postage right here in front of me.",
        "It was unused and still in the original packaging.",
        "The website said returns were free within 30 days.",
        "I printed the label twice and the scanner wouldn't read it.",
    ],
}
AGENT_EXPLAIN = {
    "billing": [
        "It looks like the payment was taken again when the bill was reissued.",
        "The increase is because your fixed price plan ended in {month}.",
        "I can see the refund was approved but it never went to the finance team.",
    ],
    "technical": [
        "There's a known fault in your area, our engineers are working on it.",
        "I can see your line has dropped {count} times in the last 24 hours.",
        "The router is showing as offline on our side, which suggests a hardware fault.",
    ],
    "orders": [
        "The parcel is showing at the {courier} depot, it was missed off the van.",
        "The item was picked from the wrong shelf at the warehouse, I'm sorry.",
        "The delivery failed because the address was missing the flat number.",
    ],
    "accounts": [
        "The account was locked after three failed login attempts.",
        "There's an old address still attached to the billing profile.",
        "The security team flagged a login from a new device on {day}.",
    ],
    "retention": [
        "Your current deal ends on {fday} and you'd move to our standard tariff.",
        "The early exit fee would be {amount} based on the months left.",
    ],
    "returns": [
        "The return was received on {day} but it hasn't been checked in yet.",
        "The warehouse marked the item as used, which is why it was refused.",
    ],
}

FIXES = {
    "billing": [
        "I've refunded {amount} to your card, it should show in 3 to 5 working days.",
        "I've removed the late fee and added a {amount} credit to your account.",
        "I've reinstated your discount from this bill onwards.",
        "I've moved your direct debit to the {daynum} of each month as you asked.",
        "The duplicate payment is reversed now, you'll see it on your next statement.",
    ],
    "technical": [
        "I've reset the line from our side, can you restart the {device} for me?",
        "I've booked an engineer for {fday} between 8am and 1pm.",
        "There was a fault at the exchange, it's fixed now so you should be back online.",
        "I'm sending you a replacement {device}, it'll arrive by {fday}.",
        "I've sent a password reset link to your email, it's valid for 24 hours.",
    ],
    "orders": [
        "I've arranged a redelivery for {fday}, you'll get a text with a one hour slot.",
        "I've sent out a replacement {product} on next day delivery.",
        "I've opened a claim with {courier} and refunded the {amount} in the meantime.",
        "The delivery is now booked for {fday}, order {order}.",
        "I've reinstated the order and waived the delivery charge.",
    ],
    "accounts": [
        "That's all updated, the new address is on the account now.",
        "I've unlocked the account and sent you a temporary password.",
        "I've secured the account and reset the email back to yours.",
        "Your statements for {month} are on their way to your email now.",
        "The change is done, you'll get a confirmation letter within 7 days.",
    ],
    "retention": [
        "I can offer you the same package for {amount} a month on a 12 month deal.",
        "I've applied a loyalty discount, so your bill stays at {amount}.",
        "I can waive the early exit fee given what's happened.",
        "I've put the new price on hold for three months while you decide.",
    ],
    "returns": [
        "The refund of {amount} has been processed, it'll be back in 3 to 5 days.",
        "I've emailed you a new returns label, you can drop it at any post office.",
        "I've booked a collection with {courier} for {fday}.",
        "I've overridden the decision and approved the return.",
    ],
}

GREETINGS_AGENT = [
    "Thank you for calling {company}, my name's {agent}, how can I help you today?",
    "Hi, you're through to {agent} at {company}, what can I do for you?",
    "Good {part}, {company}, {agent} speaking. How can I help?",
    "Hello and welcome to {company}, I'm {agent}. What can I help you with today?",
    "Hi there, it's {agent} from {company}. How can I help?",
    "Hi {cust}, thanks for waiting. I'm {agent}, how can I help today?",
    "Thank you for calling {company}, you're speaking with {agent}. Can I start by taking your name?",
    "Hi, thanks for getting in touch with {company}. My name is {agent} and I'll be helping you today.",
    "Good {part}, thanks for holding, you're through to {agent} in the {dept} team. How can I help?",
]
CUSTOMER_OPENERS = ["Hi,", "Hello,", "Hi there,", "Yeah hi,", "Morning,", "Hiya,", "Right,",
                    "Hello yes,", "", "", "", "Hi {agent},", "Um hi,", "OK so"]

# Frustration signals (customer)
ANGER = [
    "This is absolutely ridiculous.", "I'm so fed up with this.", "Honestly I'm furious.",
    "This is a joke.", "Your service is terrible.", "I'm sick and tired of this.",
    "This is completely unacceptable.", "I'm really angry about this.",
    "It's pathetic, honestly.", "I'm livid.", "This is the worst service I've ever had.",
    "I'm beyond annoyed now.", "It's disgraceful.", "I am absolutely fuming.",
]
ESCALATION = [
    "I want to speak to a manager.", "Put me through to your supervisor please.",
    "Can I talk to someone more senior?", "I want this escalated.",
    "Get me someone who can actually help.", "I'd like to make a formal complaint.",
    "Let me speak to your manager right now.", "Can you escalate this please?",
]
CHURN = [
    "If this isn't fixed today I'm cancelling my account.", "I'm switching to another provider.",
    "I'll be taking my business elsewhere.", "I want to close my account.",
    "Honestly I'm thinking about leaving {company}.", "I've had enough, cancel my contract.",
    "{competitor} offered me a better deal and I'm tempted to go.",
    "One more problem and I'm leaving.",
]
REPEAT = [
    "This is the {ordinal} time I've called about this.", "I already explained this to the last person.",
    "It's still not fixed.", "I was promised a callback {day} and nobody rang.",
    "Every time I call I get a different answer.", "I've been chasing this for {weeks} weeks now.",
    "Your colleague said it was sorted last time and it isn't.",
    "I called on {day} about exactly the same thing.",
]
EFFORT = [
    "I've been on hold for {duration}.", "I've tried everything, I've restarted it {count} times.",
    "Nobody ever calls back.", "I had to take a day off work for this.",
    "I've spent hours on this already.", "I've filled in the form three times.",
    "I waited in all day and nobody came.", "I've been passed around four departments.",
]
LEGAL = [
    "I'll be reporting you to the ombudsman.", "I'm going to speak to my lawyer about this.",
    "I'll take you to small claims court if I have to.", "I'm reporting this to Trading Standards.",
]
PROFANITY = [
    "This is bloody useless.", "What the hell is going on?", "This is a shit service.",
    "Are you taking the piss?", "I'm so pissed off with this.", "For god's sake.",
    "This is crap.", "Damn it, not again.", "Bloody hell.", "What a load of rubbish.",
]
SHOUTS = [
    "I WANT MY MONEY BACK", "WHY IS THIS SO DIFFICULT", "I HAVE ALREADY TOLD YOU THIS",
    "JUST FIX IT", "THIS IS NOT GOOD ENOUGH", "NOBODY LISTENS", "I AM NOT PAYING FOR THIS",
    "HOW MANY TIMES DO I HAVE TO CALL",
]
SARCASM = [
    "Oh great, just great.", "Thanks for nothing.", "Wonderful, another week of waiting.",
    "Brilliant, that's really helpful.", "Oh perfect, so I just wait forever then?",
    "Fantastic, so it's my fault now.", "Oh lovely, more waiting.", "Great service as always.",
]
# What the customer actually wants, said alongside a complaint.
CUSTOMER_CONTEXT = [
    "All I want is for {issue_ref} to be sorted.", "Nobody has told me what's going on.",
    "I just need a straight answer about {issue_ref}.", "I've got two kids and no time for this.",
    "I was told it would be done by {day}.", "I need this fixed before {fday}, not next month.",
    "Can you just tell me when it'll actually be fixed?", "I pay {amount} a month for this.",
    "It's been going on since {month}.", "What are you actually going to do about it?",
]
# Hard negatives: look like signals but are not.
CUSTOMER_HARD_NEGATIVES = [
    "Can you cancel that last order please, I ordered two by mistake.",
    "I'm not angry, I'm just a bit confused by the bill.",
    "I don't want to cancel, I just want it working.",
    "My manager at work asked me to check this.", "No rush, whenever you're ready.",
    "I'm not going anywhere, I just want an answer.", "Can I cancel the engineer visit on {fday}?",
    "I'm not complaining, it was a good deal.", "It's not a big problem, just odd.",
]
CALM_CUSTOMER_MID = [
    "When will the refund arrive?", "Do I need to send the {product} back?",
    "Can you change the delivery date to {fday}?", "Will I get an email to confirm that?",
    "How long will that take?", "Is there anything I need to do my end?",
    "OK, and will that affect my next bill?", "Can you text me the reference number?",
    "Right, and what if it happens again?", "Sure, I can wait.", "Yes, that's right.",
    "Yeah that's the one.", "OK.", "Alright, go on.", "Mm-hm, go on.", "Yes please.",
    "Sorry, I didn't catch that, could you say it again?",
    "Can you put that in writing for me so I have a record of it?",
    "Can you check if there's anything else outstanding?", "Is it {amount} or {amount2}?",
    "Could you spell that for me?", "Let me grab a pen.", "Oh OK, that makes sense.",
    "Would it be cheaper to pay annually?", "Do you need the serial number as well?",
]
CUSTOMER_THANKS = [
    "Thank you, that's brilliant.", "Great, thanks for your help.", "Oh that's a relief, thanks.",
    "Perfect, thank you so much.", "Thanks, I really appreciate that.", "Lovely, cheers.",
    "That's great, thank you.", "OK thanks, that's sorted then.",
    "Oh brilliant, that's exactly what I needed, thank you.",
    "Thank you, that's a weight off my mind honestly.",
    "Great, as long as it's sorted by {fday} that's fine.",
    "Thanks {agent}, you've been really helpful.",
]
CUSTOMER_UNHAPPY_END = [
    "Fine, whatever.", "I'll believe it when I see it.", "I'll be leaving a review.",
    "This still isn't good enough.", "Right. Fine.", "I doubt it'll be sorted but OK.",
    "I'll wait and see then.", "So basically nothing is going to happen.",
]
CUSTOMER_SIGNOFF = [
    "That's everything I needed, have a good day.", "That's all I wanted, bye for now.",
    "You've been a great help, I'll let you get on.", "That's me sorted then, bye.",
    "I'll keep an eye out for the confirmation email, bye.",
    "Sorry for getting a bit worked up earlier, it's been a long week.",
]
CUSTOMER_BYE = ["No, that's everything, thanks.", "No that's all, bye.", "Cheers, bye.",
                "No, that's it, thanks for sorting it out so quickly.", "No thank you.",
                "Nope, that's all. Thanks for your help, bye.", "No, that's it for now.",
                "No that's everything, I'll keep an eye out for the email.",
                "That's all, thanks. Have a good day.",
                "No, you've answered everything, thank you very much."]

# Empathy (agent)
ACK = ["I understand.", "I hear you.", "I see what you mean.", "I completely understand.",
       "I understand why you're upset.", "Right, I understand.", "I hear what you're saying.",
       "OK, I see."]
VALIDATION = [
    "That must be really frustrating.", "You have every right to be upset.",
    "That's completely understandable.", "I can imagine how stressful that's been.",
    "Anyone would be annoyed by that.", "That sounds really frustrating.",
    "It's totally fair that you're upset.", "That's not the experience you should have had.",
]
APOLOGY = [
    "I'm so sorry about that.", "I apologise for the inconvenience.",
    "My apologies for the trouble this has caused.", "I'm really sorry you've had to call back.",
    "I'm sorry for the wait.", "I'm very sorry that's happened.", "Sorry about this.",
    "I'm sorry you've been passed around.",
]
REASSURANCE = [
    "Don't worry, we'll get this sorted.", "You're in good hands.",
    "We'll get to the bottom of this today.", "Rest assured this will be fixed.",
    "Don't worry, you won't be out of pocket.", "We'll make sure it doesn't happen again.",
]
PERSPECTIVE = [
    "If I were in your position I'd feel the same.", "I can see why you'd feel that way.",
    "From your point of view it must look like nobody cares.",
    "I'd be annoyed too if that happened to me.",
]
ACTIVE_LISTENING = [
    "So what you're saying is {issue_ref} started on {day}?",
    "Just to make sure I understand, this is about {issue_ref}?",
    "If I understand correctly, you've already called about {issue_ref}?",
    "So just to confirm, it's {issue_ref} you need help with?",
    "Let me check I've got this right, {issue_ref} is still a problem?",
]
OWNERSHIP = [
    "I'll take care of this for you.", "Let me fix that right now.",
    "I will personally make sure this gets resolved.", "I'm going to own this until it's fixed.",
    "Leave it with me, I'll sort it.", "I'll follow this up myself and call you back.",
]
GRATITUDE = [
    "Thank you for your patience.", "I appreciate you bearing with me.", "Thanks for holding.",
    "Thanks for bringing this to our attention.", "Thank you for waiting.",
    "Thanks so much for your patience today.",
]

# Dismissive (agent)
MINIMISING = ["Calm down, it's not a big deal.", "It's only {amount}.",
              "It's really not that serious.", "There's no need to get upset.",
              "It's just a small delay."]
DEFLECTING = ["That's not my department.", "There's nothing I can do about that.",
              "You'll have to contact {courier} yourself.", "That's not something I deal with.",
              "You'd need to take that up with another team."]
POLICY = ["That's our policy.", "I'm afraid those are the terms and conditions.",
          "Rules are rules, I can't change it.", "It's company policy, I'm afraid.",
          "The system won't let me do that."]
BLAMING = ["You should have read the terms.", "You didn't follow the instructions.",
           "You should have called us sooner.", "You must have entered the wrong details.",
           "You should have checked the order before confirming."]
IMPATIENCE = ["As I already said, ", "Like I told you, ", "As I've explained already, ",
              "Again, ", "I've already told you, "]
BUT_NEGATION = ["I understand, but there's nothing we can do.", "I hear you, but that's how it works.",
                "I'm sorry, but that's the process.", "I get that, but it's not possible."]

# Procedural (agent)
AGENT_VERIFY = [
    ("Can I take your account number please, it's on the top right of your bill?",
     ["Sure, it's {account}.", "The account number is {account}.", "Hang on... it's {account}.",
      "I think it's {account}, yeah, I'm reading it off an old letter.",
      "Yes, it's {account}, the account is in my name, {cust_full}."]),
    ("Could you confirm the first line of your address and the postcode for me?",
     ["Yeah it's {address}.", "{address}, that's the billing address too.",
      "It's {street}, postcode {postcode}.", "{address}, though I moved there in {month}."]),
    ("What's the email address registered on the account?",
     ["It's {email}.", "Email is {email}, or it might be my old one.",
      "It should be {email}, that's the one I use for everything."]),
    ("Can you give me the order number, it starts with a hash or ORD?",
     ["Order number {order}.", "Hang on, let me find the email... it's {order}.",
      "It's {order}, I ordered it on {day}.", "Yes, {order}, it was for a {product}."]),
    ("Can I just get your full name and date of birth for security, please?",
     ["{cust_full}, {dob}.", "It's {cust_full}, date of birth {dob}.",
      "Sure, {cust_full}, born {dob}."]),
    ("Before I go any further, can you confirm your postcode and date of birth?",
     ["The postcode is {postcode} and I was born on {dob}.", "{postcode}, and {dob}."]),
]
AGENT_FOUND = [
    "Thanks, I've found your account.", "Lovely, that's you verified, thank you for that.",
    "Thanks for confirming, I've got your account up in front of me now.",
    "Thanks {cust}, I've got your details up.", "Great, I can see the account now.",
    "OK, I've found order {order}.", "Perfect, just pulling that up now.",
]
AGENT_INVESTIGATE = [
    "Let me just have a look at {issue_ref}.", "Bear with me one moment while I check what happened with {issue_ref}.",
    "I can see the payment of {amount} went out on {day}.",
    "I can see {issue_ref} on the system here.", "Give me two minutes to look into this, I'll stay on the line.",
    "I'm just checking the notes from your last call.", "Can you hold for a moment while I check with my team?",
    "It shows here that the order was dispatched on {day}.", "Let me check the notes on your account from the last few weeks.",
    "The system says {issue_ref} was logged on {day}.",
]
TECH_INVESTIGATE = [
    "Are you able to restart the {device} for me while I'm on the line?",
    "Can you tell me what lights are showing on the {device} at the moment?",
    "I'm going to run a line test now, it takes about a minute.",
]
AGENT_TRANSFER = [
    "I'm going to transfer you to our {dept} team, they can look at this properly.",
    "I'll need to pass you to {dept}, please hold while I transfer you.",
]
AGENT_ESCALATE = [
    "I've escalated this to my team leader, they'll call you within 24 hours.",
    "I've raised a formal complaint, your reference is {ref}.",
    "Let me get my supervisor, please hold.",
]
AGENT_CANT = [
    "Unfortunately I can't do that today, it has to go through the back office.",
    "I've logged it but it can take up to 10 working days.",
    "I'm not able to refund that until the investigation is complete.",
]
AGENT_ANYTHING_ELSE = [
    "Is there anything else I can help you with today?", "Anything else I can do for you while I've got you?",
    "You'll get a confirmation email shortly. Anything else?",
    "Your reference number is {ref}. Is there anything else?",
]
AGENT_RECAP = [
    "I've added notes to the account so anyone you speak to can see what we've done.",
    "You'll get a text and an email confirming everything we've discussed.",
    "Your reference number for today is {ref} if you need to call back.",
    "I've set a reminder to check on this {fday}.",
]
AGENT_BYE = [
    "Thanks for calling {company}, have a lovely {daypart}.", "Take care, bye now, and do get back in touch if anything changes.",
    "Thanks for chatting with us today, I hope the rest of your {daypart} goes well.", "Have a good {daypart}, bye.",
    "Thanks {cust}, enjoy the rest of your {daypart}.",
]
BOT_GREETING = [
    "Hi! I'm {bot}, {company}'s virtual assistant. What can I help you with?",
    "Hello, I'm {bot}. Tell me in a few words what your question is about.",
]
CUSTOMER_TO_BOT = ["billing", "speak to an agent", "I want a human", "delivery problem",
                   "agent please", "my {product} isn't working", "refund", "talk to someone",
                   "cancel contract", "problem with my account"]
BOT_HANDOFF = [
    "Thanks, I'm connecting you to an agent now. The wait is about {mins} minutes.",
    "I'll pass you to one of our team. You're number {pos} in the queue.",
]
SYSTEM_JOIN = ["{agent} has joined the chat.", "Chat transferred to {agent}.",
               "Customer is verified.", "{agent} joined the conversation."]
DEPTS = {"billing": "billing", "technical": "technical support", "orders": "deliveries",
         "accounts": "account security", "retention": "customer loyalty", "returns": "returns"}
COMPETITORS = ["Octopus", "Sky", "Virgin", "BT", "Vodafone", "Amazon", "EE", "Three"]
EMOJI_CALM = ["\U0001F642", "\U0001F44D", "\U0001F60A", "\U0001F64F", ":)", "x"]
EMOJI_UPSET = ["\U0001F621", "\U0001F644", "\U0001F624", "\U0001F612", ":(", "\U0001F92C"]
VOICE_FILLERS = ["um", "uh", "erm", "you know", "like", "so", "right"]


class Filler:
    """Fills {slot} placeholders with values that stay consistent within one conversation."""

    def __init__(self, rng, conv):
        self.rng = rng
        self.conv = conv

    def fill(self, template):
        rng, c = self.rng, self.conv
        if "{" not in template:
            return template
        slots = {
            "company": c["company"], "agent": c["agent_name"], "device": c["device"], "cust": c["cust_first"],
            "cust_full": c["cust_first"] + " " + c["cust_last"], "product": c["product"],
            "issue_ref": c["issue_ref"], "order": c["order"], "account": c["account"],
            "address": c["address"], "postcode": c["address"].rsplit(", ", 1)[-1].split(" ", 1)[-1],
            "street": c["address"].split(",")[0], "email": c["email"], "dob": c["dob"],
            "courier": c["courier"], "dept": DEPTS[c["queue"]], "bot": c["bot"],
            "competitor": rng.choice(COMPETITORS),
            "amount": money(rng), "amount2": money(rng), "day": day_ref(rng),
            "fday": future_day(rng),
            "daynum": str(rng.randint(1, 28)) + "th", "month": rng.choice(MONTHS),
            "ordinal": c["ordinal"], "duration": rng.choice(DURATIONS),
            "count": str(rng.randint(3, 12)), "weeks": str(rng.randint(2, 6)),
            "ref": "CR%07d" % rng.randint(0, 9999999), "mins": str(rng.randint(2, 25)),
            "pos": str(rng.randint(2, 14)), "part": c["part"], "daypart": rng.choice(DAYPARTS),
        }
        out = template
        # Fill left to right so repeated slots of random kinds ({amount}) get fresh values.
        while "{" in out:
            i = out.index("{")
            j = out.index("}", i)
            out = out[:i] + slots[out[i + 1:j]] + out[j + 1:]
        return out


def lc_first(s):
    return s[:1].lower() + s[1:] if s[:2] != "I " and s[:2] != "I'" else s


def join(*parts):
    return " ".join(p for p in parts if p)


def chat_style(rng, text, casual):
    """Typed chat: some customers type lower case, drop final punctuation or make a typo."""
    if casual and rng.random() < 0.5:
        if not any(w.isupper() and len(w) > 2 for w in text.split()):
            text = text.lower()
    if casual and rng.random() < 0.35 and text.endswith("."):
        text = text[:-1]
    if casual and rng.random() < 0.08:
        words = text.split(" ")
        k = rng.randrange(len(words))
        w = words[k]
        if len(w) > 4 and w.isalpha():
            i = rng.randrange(1, len(w) - 2)
            words[k] = w[:i] + w[i + 1] + w[i] + w[i + 2:]
            text = " ".join(words)
    return text


def voice_style(rng, text):
    """Speech-to-text output: lower case, little punctuation, fillers."""
    text = text.replace("!", ".").replace(";", ",")
    if rng.random() < 0.7:
        text = text.lower().replace(" i ", " I ").replace(" i'", " I'")
        if text.startswith("i ") or text.startswith("i'"):
            text = "I" + text[1:]
    if rng.random() < 0.5:
        text = text.replace(",", "")
    if rng.random() < 0.3:
        # Fillers go where speakers hesitate: at the start or after a clause.
        words = text.split(" ")
        spots = [0] + [i + 1 for i, w in enumerate(words[:-1]) if w.endswith((",", "."))]
        k = rng.choice(spots)
        filler = rng.choice(VOICE_FILLERS) + ("," if rng.random() < 0.3 else "")
        nxt = words[k] if k < len(words) else ""
        if nxt[:1].isupper() and nxt != "I" and not nxt.startswith("I'"):
            filler = filler.capitalize()
            words[k] = nxt[:1].lower() + nxt[1:]
        words.insert(k, filler)
        text = " ".join(words)
    return text


# ---------------------------------------------------------------------------------------------
# Conversation generation
# ---------------------------------------------------------------------------------------------

class World:
    def __init__(self, rng, n_conv):
        self.rng = rng
        n_agents = max(4, int(round(n_conv / 400.0)))
        self.agents = []
        for i in range(n_agents):
            # Empathy propensity varies widely between agents; a few are plainly dismissive.
            emp = min(0.95, max(0.05, rng.betavariate(2.2, 1.6)))
            dis = max(0.0, (0.55 - emp) * 0.35) + (0.08 if rng.random() < 0.12 else 0.0)
            self.agents.append({"id": "a-%03d" % (i + 1), "name": FIRST_NAMES[i % len(FIRST_NAMES)],
                                "emp": emp, "dis": dis, "skill": rng.uniform(0.6, 0.95)})
        self.n_customers = max(50, n_conv * 5)
        per_day = max(1, n_agents * 24)
        self.days = max(1, int(math.ceil(n_conv / float(per_day))))
        self.epoch = datetime.datetime(2026, 3, 2, tzinfo=datetime.timezone.utc)


def iso(ms):
    t = datetime.datetime.fromtimestamp(ms / 1000.0, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


def schedule(world, n_conv):
    """Start times and agents for all conversations, in time order, with each conversation's
    position in its agent's shift that day (later positions get less empathy: fatigue)."""
    rng = world.rng
    slots = []
    epoch_ms = int(world.epoch.timestamp() * 1000)
    for _ in range(n_conv):
        day = rng.randrange(world.days)
        # Opening hours 08:00-20:00, busier late morning and early evening.
        hour = min(19.99, max(8.0, rng.choice([rng.gauss(11, 1.6), rng.gauss(17.5, 1.5),
                                                rng.uniform(8, 20)])))
        start = epoch_ms + day * 86400000 + int(hour * 3600000) + rng.randrange(60000)
        agent = rng.randrange(len(world.agents))
        slots.append([start, agent, day])
    slots.sort()
    count = {}
    for s in slots:
        key = (s[1], s[2])
        count[key] = count.get(key, 0) + 1
        s.append(count[key])
    return slots


def pick_queue(rng):
    r = rng.random()
    acc = 0.0
    for q, p in QUEUES.items():
        acc += p
        if r < acc:
            return q
    return "billing"


def generate(world, n_conv):
    rng = world.rng
    history = {}     # customer index -> list of (start_ms, resolved, queue, contacts)
    recent = []      # (start_ms, customer index) of conversations, for call-backs
    for idx, (start_ms, agent_i, _day, shift_pos) in enumerate(schedule(world, n_conv)):
        agent = world.agents[agent_i]
        # Call-backs: some customers contact again within days, far more often when the last
        # contact left the problem unresolved.
        cust = None
        prev = None
        while recent and recent[0][0] < start_ms - 7 * 86400000:
            recent.pop(0)
        if recent and rng.random() < 0.16:
            cand = recent[rng.randrange(len(recent))][1]
            last = history[cand][-1]
            if last[0] < start_ms and (not last[1] or rng.random() < 0.3):
                cust, prev = cand, last
        if cust is None:
            cust = rng.randrange(world.n_customers)
            if cust in history and history[cust][-1][0] >= start_ms:
                cust = rng.randrange(world.n_customers)
            prev = history[cust][-1] if cust in history else None
            if prev is not None and prev[0] < start_ms - 7 * 86400000:
                prev = None
        conv = make_conversation(world, idx, start_ms, agent, shift_pos, cust, prev)
        history.setdefault(cust, []).append(
            (start_ms, conv["outcome"].get("resolved", False), conv["queue"],
             conv["_contacts"]))
        recent.append((start_ms, cust))
        yield conv


def make_conversation(world, idx, start_ms, agent, shift_pos, cust, prev):
    rng = world.rng
    crng = random.Random(cust * 7919 + 17)  # stable per-customer identity
    is_repeat = prev is not None and not prev[1]
    queue = prev[2] if is_repeat else pick_queue(rng)
    channel = "voice" if rng.random() < 0.45 else "chat"
    first, last = crng.choice(FIRST_NAMES), crng.choice(SURNAMES)
    contacts = (prev[3] + 1) if is_repeat else 1
    issue, issue_ref = rng.choice(ISSUES[queue])
    products = PRODUCTS.get(queue) or PRODUCTS[rng.choice(["technical", "orders"])]
    hour = (start_ms // 3600000) % 24
    conv = {
        "company": crng.choice(COMPANIES), "agent_name": agent["name"], "cust_first": first,
        "cust_last": last, "product": rng.choice(products),
        "device": rng.choice(["router", "TV box", "smart meter", "set-top box", "hub"]), "order": order_no(rng),
        "account": account_no(crng), "address": address(crng), "email": email(crng, first, last),
        "dob": dob(crng), "courier": rng.choice(COURIERS), "queue": queue,
        "bot": rng.choice(BOT_NAMES), "ordinal": ORDINALS[min(contacts, len(ORDINALS)) - 1],
        "part": "morning" if hour < 12 else ("afternoon" if hour < 17 else "evening"),
        "issue_ref": "",
    }
    f = Filler(rng, conv)
    conv["issue_ref"] = f.fill(issue_ref)
    issue_text = f.fill(issue)

    # Customer temperament: repeat contacts and some issues start hotter.
    r = rng.random() - (0.25 if is_repeat else 0.0) - (0.1 if queue == "retention" else 0.0)
    mood = 0 if r > 0.55 else (1 if r > 0.2 else 2)
    casual = rng.random() < 0.5
    fatigue = max(0.55, 1.0 - 0.025 * (shift_pos - 1))
    emp_p = agent["emp"] * fatigue
    dis_p = agent["dis"] * (1.0 + 0.5 * (1.0 - fatigue))

    turns = []
    stats = {"emp": 0, "dis": 0, "esc_req": False, "churn": False, "anger_peak": mood,
             "frustrated_turns": 0}

    def say(speaker, text, kind="talk"):
        if channel == "voice" and speaker in ("agent", "customer"):
            text = voice_style(rng, text)
        elif speaker == "customer":
            text = chat_style(rng, text, casual)
            if rng.random() < 0.05:
                text = text + " " + rng.choice(EMOJI_CALM if mood == 0 else EMOJI_UPSET)
        turns.append({"speaker": speaker, "text": text, "_kind": kind})

    def customer_signals(level, allow_churn=True):
        """0-2 frustration phrases for the customer's current mood."""
        out = []
        if level == 0:
            return out
        pool = [(ANGER, 3), (EFFORT, 2), (SARCASM, 1)]
        if level >= 2:
            pool += [(ESCALATION, 2), (PROFANITY, 1), (ANGER, 2)]
            if allow_churn:
                pool.append((CHURN, 2))
            if rng.random() < 0.04:
                pool.append((LEGAL, 3))
        if is_repeat:
            pool.append((REPEAT, 3))
        n = 1 if level == 1 or rng.random() < 0.6 else 2
        for _ in range(n):
            bank = weighted(rng, pool)
            phrase = f.fill(rng.choice(bank))
            if bank is ESCALATION:
                stats["esc_req"] = True
            if bank is CHURN:
                stats["churn"] = True
            out.append(phrase)
        if level >= 2 and channel == "chat" and rng.random() < 0.3:
            out.append(rng.choice(SHOUTS) + rng.choice(["!!", "!!!", "", "?!"]))
        elif level >= 1 and channel == "chat" and rng.random() < 0.15:
            out[-1] = out[-1].rstrip(".") + "!!"
        if rng.random() < 0.5:
            out.insert(rng.randint(0, len(out)), f.fill(rng.choice(CUSTOMER_CONTEXT)))
        stats["frustrated_turns"] += 1
        return out

    def empathy(level):
        """Empathy phrases an agent opens a reply with, or [] (mood-aware, fatigue-aware)."""
        p = emp_p * (1.0 if level > 0 else 0.45)
        if rng.random() >= p:
            return []
        if level > 0:
            banks = [(APOLOGY, 3), (VALIDATION, 3), (ACK, 2), (PERSPECTIVE, 1), (REASSURANCE, 1)]
        else:
            banks = [(ACK, 2), (GRATITUDE, 2), (REASSURANCE, 1), (ACTIVE_LISTENING, 1)]
        out = [f.fill(rng.choice(weighted(rng, banks)))]
        if rng.random() < 0.35:
            out.append(f.fill(rng.choice(weighted(rng, [(OWNERSHIP, 2), (REASSURANCE, 1),
                                                        (ACTIVE_LISTENING, 1)]))))
        stats["emp"] += 1
        return out

    def dismissive(level):
        if rng.random() >= dis_p * (1.5 if level > 0 else 0.6):
            return None
        stats["dis"] += 1
        bank = weighted(rng, [(MINIMISING, 2 if level else 0.3), (DEFLECTING, 2), (POLICY, 2),
                              (BLAMING, 1), (BUT_NEGATION, 2)])
        return f.fill(rng.choice(bank))

    # Chat: optional bot triage and a system line when the agent joins.
    if channel == "chat" and rng.random() < 0.35:
        say("bot", f.fill(rng.choice(BOT_GREETING)))
        say("customer", f.fill(rng.choice(CUSTOMER_TO_BOT)))
        say("bot", f.fill(rng.choice(BOT_HANDOFF)))
        say("system", f.fill(rng.choice(SYSTEM_JOIN)))
    say("agent", f.fill(rng.choice(GREETINGS_AGENT)))

    # The customer's opening: the issue, coloured by mood, and a repeat-contact complaint.
    opener = f.fill(rng.choice(CUSTOMER_OPENERS))
    core = issue_text[0].upper() + issue_text[1:] if not opener else issue_text
    parts = [join(opener, core) + "."]
    if rng.random() < 0.8:
        parts.append(f.fill(rng.choice(ISSUE_DETAILS[queue])))
    if is_repeat and rng.random() < 0.8:
        parts.append(f.fill(rng.choice(REPEAT)))
    if mood >= 1:
        parts += customer_signals(mood, allow_churn=mood >= 2 and rng.random() < 0.5)
    elif rng.random() < 0.1:
        parts.append(f.fill(rng.choice(CUSTOMER_HARD_NEGATIVES)))
    split_customer(rng, say, parts)

    # First agent reply: empathy or not, then verification (one or two questions).
    emp = empathy(mood)
    d = dismissive(mood) if not emp else None
    question, answers = rng.choice(AGENT_VERIFY)
    say("agent", join(*(emp + ([d] if d else []) + [f.fill(question)])))
    if d and mood:
        mood = min(2, mood + 1)
    say("customer", join(rng.choice(["", "", "Yes of course,", "Sure,", "One sec,",
                                      "Hang on, let me get my glasses.", "OK,"]),
                         f.fill(rng.choice(answers))), "procedural")
    if rng.random() < 0.2:
        question, answers = rng.choice(AGENT_VERIFY)
        say("agent", join("Thanks.", f.fill(question)))
        say("customer", f.fill(rng.choice(answers)), "procedural")
    investigate = AGENT_INVESTIGATE + (TECH_INVESTIGATE if queue == "technical" else [])
    say("agent", join(f.fill(rng.choice(AGENT_FOUND)),
                      f.fill(rng.choice(AGENT_EXPLAIN[queue] if rng.random() < 0.5
                                        else investigate))))

    # Middle exchanges; the customer's mood responds to how the agent treats them.
    for _ in range(rng.choice([1, 1, 2, 2, 2, 3])):
        if mood == 0:
            r = rng.random()
            if r < 0.1:
                c = f.fill(rng.choice(CUSTOMER_HARD_NEGATIVES))
            elif r < 0.6:
                c = join(f.fill(rng.choice(CALM_CUSTOMER_MID)),
                         f.fill(rng.choice(CALM_CUSTOMER_MID)))
            elif r < 0.95:
                c = join(f.fill(rng.choice(ISSUE_DETAILS[queue])),
                         f.fill(rng.choice(CALM_CUSTOMER_MID)))
            else:
                c = f.fill(rng.choice(CALM_CUSTOMER_MID))
            say("customer", c)
        else:
            parts = customer_signals(mood, allow_churn=mood >= 2)
            if rng.random() < 0.4:
                parts.insert(0, f.fill(rng.choice(CALM_CUSTOMER_MID + ISSUE_DETAILS[queue])))
            split_customer(rng, say, parts)
        emp = empathy(mood)
        d = dismissive(mood)
        body = f.fill(rng.choice(investigate + AGENT_EXPLAIN[queue]))
        if d and rng.random() < 0.3:
            body = rng.choice(IMPATIENCE) + lc_first(body)
        elif not emp and not d and rng.random() < 0.5:
            body = join(body, f.fill(rng.choice(investigate + AGENT_EXPLAIN[queue])))
        reply = emp + ([d] if d else []) + [body]
        say("agent", join(*reply))
        if emp and not d:
            if rng.random() < 0.55:
                mood = max(0, mood - 1)
        elif d:
            mood = min(2, mood + 1)
        elif rng.random() < 0.15:
            mood = min(2, mood + 1)
        stats["anger_peak"] = max(stats["anger_peak"], mood)

    # Resolution, transfer or escalation.
    p_resolve = agent["skill"] * (0.75 + 0.25 * agent["emp"]) - 0.25 * min(stats["dis"], 2) \
        - (0.15 if is_repeat else 0.0)
    resolved = rng.random() < p_resolve
    escalated = False
    transferred = False
    closed_by_customer = False
    if resolved:
        emp = empathy(0) if rng.random() < 0.5 else []
        say("agent", join(*(emp + [f.fill(rng.choice(FIXES[queue]))])))
        if mood == 2 and rng.random() < 0.5:
            say("customer", f.fill(rng.choice(SARCASM + CUSTOMER_UNHAPPY_END)))
        else:
            r = rng.random()
            if r < 0.35:
                # Thanks and goodbye in one turn; the agent skips "anything else?".
                closed_by_customer = True
                tail = f.fill(rng.choice(CUSTOMER_SIGNOFF))
            elif r < 0.7:
                tail = f.fill(rng.choice(CALM_CUSTOMER_MID[:8]))
            else:
                tail = ""
            say("customer", join(f.fill(rng.choice(CUSTOMER_THANKS)), tail))
            mood = 0
    else:
        r = rng.random()
        if stats["esc_req"] and r < 0.6:
            escalated = True
            say("agent", join(*(empathy(mood) + [f.fill(rng.choice(AGENT_ESCALATE))])))
        elif r < 0.35:
            transferred = True
            say("agent", join(*(empathy(mood) + [f.fill(rng.choice(AGENT_TRANSFER))])))
        else:
            d = dismissive(mood)
            say("agent", join(*(([d] if d else empathy(mood)) + [f.fill(rng.choice(AGENT_CANT))])))
        if mood >= 1:
            split_customer(rng, say, [f.fill(rng.choice(CUSTOMER_UNHAPPY_END))] +
                           customer_signals(mood)[:1])
        else:
            say("customer", f.fill(rng.choice([
                "OK, I'll wait to hear then.", "Alright, thanks. How long do they usually take?",
                "Fine, thanks. Can you make sure someone actually calls me back?",
                "OK, as long as someone gets back to me by {fday}."])))
    if closed_by_customer:
        say("agent", join(f.fill(rng.choice(GRATITUDE)) if rng.random() < emp_p else "",
                          f.fill(rng.choice(AGENT_BYE))))
    elif not transferred:
        recap = f.fill(rng.choice(AGENT_RECAP)) if rng.random() < 0.5 else ""
        say("agent", join(recap, f.fill(rng.choice(AGENT_ANYTHING_ELSE))))
        say("customer", f.fill(rng.choice(CUSTOMER_BYE)))
        # Many chat customers just leave before the agent's goodbye.
        if channel == "voice" or rng.random() < 0.4:
            say("agent", join(f.fill(rng.choice(GRATITUDE)) if rng.random() < emp_p else "",
                              f.fill(rng.choice(AGENT_BYE))))

    timing(rng, channel, start_ms, turns, agent)

    # Outcome: CSAT follows empathy, dismissiveness, resolution and how angry it got.
    agent_turns = sum(1 for t in turns if t["speaker"] == "agent")
    emp_share = stats["emp"] / float(max(1, agent_turns))
    quality = 2.9 + 2.0 * min(1.0, emp_share * 2.5) - 0.9 * min(stats["dis"], 2) \
        + (0.9 if resolved else -0.9) - 0.4 * stats["anger_peak"] - (0.3 if is_repeat else 0) \
        + rng.gauss(0, 0.6)
    outcome = {"resolved": resolved}
    end_ms = turns[-1]["_end_abs"] + rng.randint(2000, 30000)
    if resolved:
        outcome["resolved_at"] = iso(end_ms)
    if rng.random() < 0.45:
        outcome["csat"] = int(min(5, max(1, round(quality))))
    if rng.random() < 0.3:
        outcome["nps"] = int(min(10, max(0, round(quality * 2.2 - 1.0 + rng.gauss(0, 1.2)))))
    outcome["escalated"] = escalated
    outcome["transferred"] = transferred

    return {
        "conversation_id": "c-%07d" % (idx + 1), "channel": channel, "queue": queue,
        "agent_id": agent["id"], "customer_id": "u-%06d" % cust, "started_at": iso(start_ms),
        "ended_at": iso(end_ms), "turns": turns, "outcome": outcome, "_contacts": contacts,
    }


def weighted(rng, pairs):
    total = sum(w for _, w in pairs)
    r = rng.random() * total
    for item, w in pairs:
        r -= w
        if r < 0:
            return item
    return pairs[-1][0]


def split_customer(rng, say, parts):
    """Customers often send several short messages (chat) or pause between clauses (voice)."""
    parts = [p for p in parts if p]
    cur = []
    for p in parts:
        cur.append(p)
        if len(" ".join(cur)) > 100 and rng.random() < 0.5:
            say("customer", " ".join(cur))
            cur = []
    if cur:
        say("customer", " ".join(cur))


def timing(rng, channel, start_ms, turns, agent):
    """Chat turns get ts; voice turns get start_ms/end_ms from speaking rate, with gaps, holds and
    the occasional interruption."""
    t = 0
    prev_speaker = None
    prev_end = 0
    for turn in turns:
        n = len(turn["text"])
        if channel == "chat":
            if turn["speaker"] in ("bot", "system"):
                t += rng.randint(300, 2500)
            elif turn["speaker"] == "agent":
                # Agents read, look things up, type; slower when busy.
                t += int(rng.lognormvariate(9.6, 0.7)) + n * rng.randint(60, 140)
            else:
                t += int(rng.lognormvariate(9.2, 0.8)) + n * rng.randint(120, 300)
            turn["ts"] = iso(start_ms + t)
            turn["_end_abs"] = start_ms + t
        else:
            dur = int(n * 1000 / rng.uniform(12.0, 17.0)) + rng.randint(200, 900)
            if prev_speaker is None:
                s = rng.randint(800, 3000)
            elif turn["speaker"] != prev_speaker and rng.random() < 0.07:
                s = prev_end - rng.randint(300, 1500)  # talks over the other party
            elif "hold" in turn["text"] or "moment" in turn["text"]:
                s = prev_end + rng.randint(400, 900)
                dur += 0
            else:
                s = prev_end + int(rng.lognormvariate(6.5, 0.6))
            if prev_speaker == "agent" and rng.random() < 0.06:
                s += rng.randint(4000, 60000)  # silence: hold or looking something up
            s = max(0, s)
            turn["start_ms"] = s
            turn["end_ms"] = s + dur
            prev_end = max(prev_end, s + dur)
            turn["_end_abs"] = start_ms + prev_end
        prev_speaker = turn["speaker"]


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def public_turn(turn, seq, with_seq):
    out = {}
    if with_seq:
        out["seq"] = seq
    out["speaker"] = turn["speaker"]
    for k in ("ts", "start_ms", "end_ms"):
        if k in turn:
            out[k] = turn[k]
    out["text"] = turn["text"]
    return out


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def protocol_lines(conv, late_outcome):
    meta = {"type": "start", "conversation_id": conv["conversation_id"]}
    for k in ("channel", "queue", "agent_id", "customer_id", "started_at"):
        meta[k] = conv[k]
    yield dumps(meta)
    for seq, turn in enumerate(conv["turns"]):
        msg = {"type": "utterance", "conversation_id": conv["conversation_id"]}
        msg.update(public_turn(turn, seq, True))
        yield dumps(msg)
    end = {"type": "end", "conversation_id": conv["conversation_id"], "ended_at": conv["ended_at"]}
    later = {}
    for k, v in conv["outcome"].items():
        if k in ("csat", "nps") and late_outcome:
            later[k] = v
        else:
            end[k] = v
    yield dumps(end)
    if later:
        msg = {"type": "outcome", "conversation_id": conv["conversation_id"]}
        msg.update(later)
        yield dumps(msg)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="number of conversations (default 1000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--format", choices=["utterances", "protocol", "conversations"],
                    default="utterances")
    ap.add_argument("--interleave", type=int, default=1, metavar="K",
                    help="protocol: keep K conversations open at once and interleave their lines")
    ap.add_argument("--late-outcomes", type=float, default=0.0, metavar="FRAC",
                    help="protocol: send csat/nps of this fraction of conversations in a later "
                         "outcome message instead of in end (default 0)")
    ap.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    args = ap.parse_args()
    if args.n < 0 or args.interleave < 1 or not 0.0 <= args.late_outcomes <= 1.0:
        ap.error("bad -n, --interleave or --late-outcomes")

    rng = random.Random(args.seed)
    world = World(rng, args.n)
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    n_utt = 0
    n_bytes = 0
    n_lines = 0
    side = random.Random(args.seed + 1)  # choices that must not disturb the main stream
    open_convs = []  # for --interleave: lists of pending protocol lines

    def emit(line):
        nonlocal n_lines
        out.write(line)
        out.write("\n")
        n_lines += 1

    for conv in generate(world, args.n):
        for t in conv["turns"]:
            n_utt += 1
            n_bytes += len(t["text"].encode("utf-8"))
        if args.format == "utterances":
            for t in conv["turns"]:
                emit(dumps({"speaker": t["speaker"], "text": t["text"]}))
        elif args.format == "conversations":
            msg = {"type": "conversation"}
            for k in ("conversation_id", "channel", "queue", "agent_id", "customer_id",
                      "started_at"):
                msg[k] = conv[k]
            msg["turns"] = [public_turn(t, i, True) for i, t in enumerate(conv["turns"])]
            msg["outcome"] = conv["outcome"]
            emit(dumps(msg))
        else:
            lines = list(protocol_lines(conv, side.random() < args.late_outcomes))
            if args.interleave == 1:
                for line in lines:
                    emit(line)
                continue
            open_convs.append(lines)
            while len(open_convs) >= args.interleave:
                step_interleave(side, open_convs, emit)
    while open_convs:
        step_interleave(side, open_convs, emit)
    if out is not sys.stdout:
        out.close()
    avg = n_bytes / float(n_utt) if n_utt else 0.0
    sys.stderr.write("gen_corpus: %d conversations, %d utterances, %d lines, %.1f bytes per "
                     "utterance on average\n" % (args.n, n_utt, n_lines, avg))


def step_interleave(rng, open_convs, emit):
    """Emits the next line of a randomly chosen open conversation; drops it when done."""
    i = rng.randrange(len(open_convs))
    emit(open_convs[i].pop(0))
    if not open_convs[i]:
        open_convs.pop(i)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        # Output piped into head and the like: stop quietly.
        sys.stderr.close()
        sys.exit(0)
