"""The table of in-app browsers, per user agent (Android and iOS samples of each)."""

from __future__ import annotations

import pytest

from app.inapp import IN_APP_BROWSERS, in_app_browser

# Samples as these apps sent them.
IN_APP = {
    "Instagram": [
        "Mozilla/5.0 (Linux; Android 13; SM-G991B Build/TP1A.220624.014; wv) AppleWebKit/537.36"
        " (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36 Instagram"
        " 312.1.0.34.111 Android (33/13; 420dpi; 1080x2176; samsung; SM-G991B; o1s; exynos2100;"
        " en_US; 548323757)",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML,"
        " like Gecko) Mobile/15E148 Instagram 309.0.2.18.109 (iPhone15,2; iOS 17_1_2; en_US; en;"
        " scale=3.00; 1179x2556; 539947165)",
    ],
    "Facebook": [
        "Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) AppleWebKit/537.36"
        " (KHTML, like Gecko) Version/4.0 Chrome/116.0.5845.163 Mobile Safari/537.36"
        " [FB_IAB/FB4A;FBAV/430.0.0.33.108;]",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
        " Gecko) Mobile/15E148 [FBAN/FBIOS;FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;FBSV/16.6;FBSS/3;"
        "FBID/phone;FBLC/en_US;FBOP/5;FBRV/0]",
    ],
    "Messenger": [
        "Mozilla/5.0 (Linux; Android 12; SM-A525F Build/SP1A.210812.016; wv) AppleWebKit/537.36"
        " (KHTML, like Gecko) Version/4.0 Chrome/114.0.5735.196 Mobile Safari/537.36"
        " [FB_IAB/Orca-Android;FBAV/415.0.0.13.107;]",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
        " Gecko) Mobile/15E148 [FBAN/MessengerForiOS;FBAV/416.0.0.30.109;FBDV/iPhone13,2;"
        "FBMD/iPhone;FBSN/iOS;FBSV/16.5;FBSS/3;FBCR/;FBID/phone;FBLC/en_US;FBOP/5]",
    ],
    "WeChat": [
        "Mozilla/5.0 (Linux; Android 12; M2102J20SG Build/SKQ1.211006.001; wv) AppleWebKit/537.36"
        " (KHTML, like Gecko) Version/4.0 Chrome/86.0.4240.99 XWEB/4317 MMWEBSDK/20220903 Mobile"
        " Safari/537.36 MMWEBID/5090 MicroMessenger/8.0.28.2240(0x28001C35) WeChat/arm64 Weixin"
        " NetType/WIFI Language/en ABI/arm64",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
        " Gecko) Mobile/15E148 MicroMessenger/8.0.33(0x18002129) NetType/WIFI Language/en",
    ],
    "TikTok": [
        "Mozilla/5.0 (Linux; Android 12; SM-G998B Build/SP1A.210812.016; wv) AppleWebKit/537.36"
        " (KHTML, like Gecko) Version/4.0 Chrome/108.0.5359.128 Mobile Safari/537.36 trill_280304"
        " JsSdk/1.0 NetType/WIFI Channel/googleplay AppName/trill app_version/28.3.4 ByteLocale/en"
        " ByteFullLocale/en Region/US BytedanceWebview/d8a21c6",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
        " Gecko) Mobile/15E148 musical_ly_29.3.0 JsSdk/2.0 NetType/WIFI Channel/App Store"
        " ByteLocale/en Region/US ByteFullLocale/en isDarkMode/0 WKWebView/1",
    ],
    "LINE": [
        "Mozilla/5.0 (Linux; Android 13; SO-51C Build/61.2.C.0.104; wv) AppleWebKit/537.36 (KHTML,"
        " like Gecko) Version/4.0 Chrome/117.0.5938.60 Mobile Safari/537.36 Line/13.15.1/IAB",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
        " Gecko) Mobile/15E148 Safari Line/13.14.0",
    ],
    "Android WebView": [
        "Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) AppleWebKit/537.36"
        " (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36",
    ],
}
BROWSERS = [
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
    " Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
    " Gecko) CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko)"
    " SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Android 14; Mobile; rv:127.0) Gecko/127.0 Firefox/127.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0"
    " Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0 Online",
]
SAMPLES = [(name, agent) for name, agents in IN_APP.items() for agent in agents]


@pytest.mark.parametrize(("name", "agent"), SAMPLES)
def test_each_in_app_browser_is_known_by_its_user_agent(name: str, agent: str) -> None:
    assert in_app_browser(agent) == name


@pytest.mark.parametrize("agent", BROWSERS)
def test_browsers_of_their_own_are_not_in_app(agent: str) -> None:
    assert in_app_browser(agent) is None


def test_every_browser_in_the_table_has_samples_for_android_and_ios() -> None:
    assert sorted(browser.name for browser in IN_APP_BROWSERS) == sorted(IN_APP)
    for name, agents in IN_APP.items():
        systems = {"android" if "Android" in agent else "ios" for agent in agents}
        assert systems == ({"android"} if name == "Android WebView" else {"android", "ios"})
